// golden_main: the native engine checked against the golden cases, without Node.
//
//   golden_main [GOLDEN_DIR] [--quick] [--case NAME]... [--kernel NAME|all]... [--threads N] [--no-errors] [--serial]
//               [--no-int8] [--device cpu|cuda|metal]
//
// GOLDEN_DIR defaults to $RUSTASR_GOLDEN_DIR, else <repo>/../shared/golden. For every case of
// cases/index.json and every kernel of rustasr::cpu_kernels() (or the --kernel list) it checks, stage by
// stage and with the tolerances of the case JSON:
//   wav -> Session::mel vs `mel` (max abs), golden mel -> encode vs enc_conv_pos / enc_ln_post /
//   audio_embeds (relative), golden input_ids + audio_embeds -> prefill vs prefill_logits (relative,
//   argmax) and prefill_hidden_last, decode steps fed the golden ids vs decode_logits_subset and the
//   greedy ids, and end to end wav -> 16 greedy ids (exact). The same model loaded with quant "int8" is
//   checked against the int8 budget (prefill and decode logits within 2e-2 relative, decided greedy steps).
// The forced-aligner cases of aligner/index.json (when present) run on the same kernels: golden ids + audio
// embeddings -> slot logits / hidden rows (relative) and classes (exact), own mel -> audio embeddings, and
// wav + text ids -> classes end to end (exact); with int8, the logits within the int8 budget.
// Then broken inputs through the C++ API (missing / corrupt model directories, bad arguments) must fail
// with the documented ErrorCode, and a few re-encoded checkpoints (F32 with a misaligned data section,
// F16, two shards, tied embeddings) must load and agree with the golden logits.
// --quick: the two shortest cases, kernel "auto" (for sanitizer runs in CI).
// --serial: threads do not run at the same time (valgrind runs one at a time, each far slower): checks that
// need threads to overlap in time (batched decoding sharing a weight pass) are reported as skipped; the
// results of those runs (bit-identical logits) are still checked.
// --device (default $RUSTASR_TEST_DEVICE, else cpu): the backend the golden cases load on (cpu, auto, cuda,
// metal). A device other than cpu runs the cases once (kernel "auto"); cuda / metal then run device_ops.cpp's
// op-by-op parity checks against the CPU backend.
// The last line is "N passed, M failed"; the exit status is non-zero if anything failed.
#include <rustasr/engine.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <atomic>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/probe.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/gemv.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/vecops.h"
#include "model/model.h"
#include "io/file.h"
#include "io/large_pages.h"
#include "io/safetensors.h"
#include "util/json.h"

#ifndef RUSTASR_DEFAULT_GOLDEN
#define RUSTASR_DEFAULT_GOLDEN "../shared/golden"
#endif

// device_ops.cpp: op-by-op parity of a GPU backend against the CPU backend.
void device_op_checks(const std::string& device,
                      const std::function<void(bool, const std::string&, const std::string&)>& report);

namespace fs = std::filesystem;
using rustasr::ErrorCode;
using rustasr::JsonValue;
using rustasr::SafetensorsArchive;
using rustasr::TensorInfo;

namespace {

// ---- results ------------------------------------------------------------------------------------------

int g_passed = 0;
int g_failed = 0;
bool g_serial = false;  // --serial

void report(bool ok, const std::string& what, const std::string& detail = "") {
  (ok ? g_passed : g_failed)++;
  std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stdout);
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// ---- files --------------------------------------------------------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

uint32_t le32(const unsigned char* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24); }
uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// 16-bit PCM, 16 kHz, mono RIFF/WAVE -> x[i] = int16[i] / 32768. Minimal: walks the chunks, needs fmt + data.
std::vector<float> read_wav_pcm16(const std::string& path) {
  const std::string b = read_file(path);
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  if (b.size() < 12 || std::memcmp(p, "RIFF", 4) != 0 || std::memcmp(p + 8, "WAVE", 4) != 0)
    throw std::runtime_error(path + ": not a RIFF/WAVE file");
  bool have_fmt = false;
  size_t off = 12;
  while (off + 8 <= b.size()) {
    const uint32_t sz = le32(p + off + 4);
    const size_t body = off + 8;
    if (sz > b.size() - body) throw std::runtime_error(path + ": chunk runs past the end of the file");
    if (std::memcmp(p + off, "fmt ", 4) == 0) {
      if (sz < 16) throw std::runtime_error(path + ": short fmt chunk");
      const uint16_t format = le16(p + body), channels = le16(p + body + 2), bits = le16(p + body + 14);
      const uint32_t rate = le32(p + body + 4);
      if (format != 1 || channels != 1 || bits != 16 || rate != 16000)
        throw std::runtime_error(path + ": not 16-bit PCM mono 16 kHz");
      have_fmt = true;
    } else if (std::memcmp(p + off, "data", 4) == 0) {
      if (!have_fmt) throw std::runtime_error(path + ": data chunk before fmt");
      std::vector<float> x(sz / 2);
      for (size_t i = 0; i < x.size(); ++i)
        x[i] = static_cast<float>(static_cast<int16_t>(le16(p + body + 2 * i))) / 32768.f;
      return x;
    }
    off = body + sz + (sz & 1);
  }
  throw std::runtime_error(path + ": no data chunk");
}

// ---- golden tensors -----------------------------------------------------------------------------------

const TensorInfo& tensor(const SafetensorsArchive& a, const std::string& name, const char* dtype) {
  const TensorInfo* t = a.find(name);
  if (!t) throw std::runtime_error(a.path() + ": no tensor " + name);
  if (t->dtype_str != dtype) throw std::runtime_error(a.path() + ": " + name + " is " + t->dtype_str);
  return *t;
}

std::vector<float> f32_tensor(const SafetensorsArchive& a, const std::string& name) {
  const TensorInfo& t = tensor(a, name, "F32");
  std::vector<float> v(t.numel);
  std::memcpy(v.data(), t.data, t.nbytes);  // raw bytes: the mapping may be misaligned for float
  return v;
}

std::vector<int64_t> i64_tensor(const SafetensorsArchive& a, const std::string& name) {
  const TensorInfo& t = tensor(a, name, "I64");
  std::vector<int64_t> v(t.numel);
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

double max_abs(const float* a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i])));
  return m;
}

// max |a - b|; NaN anywhere counts as infinite.
double max_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(d <= m)) m = std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
  }
  return m;
}

double tol_of(const JsonValue& tolerances, const char* key, const char* field, double def) {
  const JsonValue* t = tolerances.get(key);
  if (!t) return def;
  const JsonValue* v = t->get(field);
  return v && v->is_number() ? v->as_number() : def;
}

// Compares `got` to `want`: max abs diff <= tol (absolute) or <= tol * max|want| (relative).
void compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double tol,
             bool relative, double scale = -1) {
  if (got.size() != want.size()) {
    report(false, what, "size " + std::to_string(got.size()) + " != golden " + std::to_string(want.size()));
    return;
  }
  const double d = max_diff(got.data(), want.data(), got.size());
  if (relative) {
    const double s = scale >= 0 ? scale : max_abs(want.data(), want.size());
    const double rel = s > 0 ? d / s : d;
    report(rel <= tol, what, "max|d|/max|golden| " + fmt(rel) + " (tol " + fmt(tol) + ")");
  } else {
    report(d <= tol, what, "max|d| " + fmt(d) + " (tol " + fmt(tol) + ")");
  }
}

// ---- one golden case ----------------------------------------------------------------------------------

struct Case {
  std::string name, model_dir, audio;
  int64_t mel_frames = 0;
};

struct CaseData {
  JsonValue tolerances;
  std::vector<double> margins, logit_maxabs;  // greedy.margins_top1_minus_top2 / logit_maxabs_per_step
  std::shared_ptr<SafetensorsArchive> st;
  std::vector<float> mel, conv_pos, ln_post, embeds, logits, hidden_last, subset;
  std::vector<int64_t> input_ids, generated, subset_ids;
  std::vector<float> wav;
};

CaseData load_case(const std::string& root, const Case& c) {
  CaseData d;
  const std::string json = read_file(root + "/cases/" + c.name + ".json");
  JsonValue meta = rustasr::parse_json(json);
  if (const JsonValue* t = meta.get("tolerances")) d.tolerances = *t;
  if (const JsonValue* g = meta.get("greedy")) {
    const JsonValue* m = g->get("margins_top1_minus_top2");
    const JsonValue* x = g->get("logit_maxabs_per_step");
    if (m && x && m->is_array() && x->is_array())
      for (size_t i = 0; i < m->size() && i < x->size(); ++i) {
        d.margins.push_back(m->at(i).as_number());
        d.logit_maxabs.push_back(x->at(i).as_number());
      }
  }
  d.st = SafetensorsArchive::open(root + "/cases/" + c.name + ".safetensors");
  const SafetensorsArchive& a = *d.st;
  d.mel = f32_tensor(a, "mel");
  d.conv_pos = f32_tensor(a, "enc_conv_pos");
  d.ln_post = f32_tensor(a, "enc_ln_post");
  d.embeds = f32_tensor(a, "audio_embeds");
  d.logits = f32_tensor(a, "prefill_logits");
  if (a.find("prefill_hidden_last")) d.hidden_last = f32_tensor(a, "prefill_hidden_last");
  d.subset = f32_tensor(a, "decode_logits_subset");
  d.input_ids = i64_tensor(a, "input_ids");
  d.generated = i64_tensor(a, "generated_ids");
  d.subset_ids = i64_tensor(a, "decode_logits_subset_ids");
  d.wav = read_wav_pcm16(root + "/" + c.audio);
  // The JSON's input_ids must equal the tensor (exact).
  if (const JsonValue* ids = meta.get("input_ids")) {
    bool same = ids->is_array() && ids->size() == d.input_ids.size();
    for (size_t i = 0; same && i < ids->size(); ++i) same = ids->at(i).as_int64() == d.input_ids[i];
    report(same, c.name + " input_ids JSON == tensor");
  }
  return d;
}

std::vector<int32_t> to_i32(const std::vector<int64_t>& v) { return std::vector<int32_t>(v.begin(), v.end()); }

std::vector<float> subset_of(const std::vector<float>& logits, const std::vector<int64_t>& ids) {
  std::vector<float> s(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) s[i] = logits.at(static_cast<size_t>(ids[i]));
  return s;
}

void run_case(const std::shared_ptr<const rustasr::Model>& model, const Case& c, const CaseData& d,
              const std::string& kernel) {
  const std::string tag = c.name + " [" + kernel + "] ";
  const JsonValue& tol = d.tolerances;
  rustasr::Session s(model);
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  const size_t bins = static_cast<size_t>(info.num_mel_bins);
  const int64_t T = static_cast<int64_t>(d.mel.size() / bins);

  // 1. wav -> mel
  std::vector<float> mel = s.mel(d.wav.data(), d.wav.size());
  compare(tag + "mel", mel, d.mel, tol_of(tol, "mel", "max_abs", 1e-4), false);

  // 2. golden mel -> encoder stages
  rustasr::EncoderOutputs enc = s.encode(d.mel.data(), T, true);
  compare(tag + "enc_conv_pos", enc.conv_pos, d.conv_pos,
          tol_of(tol, "enc_conv_pos", "max_abs_over_ref_maxabs", 1e-4), true);
  compare(tag + "enc_ln_post", enc.ln_post, d.ln_post, tol_of(tol, "enc_ln_post", "max_abs_over_ref_maxabs", 1e-4),
          true);
  compare(tag + "audio_embeds", enc.embeds, d.embeds, tol_of(tol, "audio_embeds", "max_abs_over_ref_maxabs", 1e-4),
          true);

  // 3. golden input_ids + golden audio_embeds -> prefill
  const std::vector<int32_t> ids = to_i32(d.input_ids);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size() / static_cast<size_t>(info.hidden_size));
  std::vector<float> hidden_last;
  std::vector<float> logits = s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio,
                                        &hidden_last);
  const double logit_scale = max_abs(d.logits.data(), d.logits.size());
  compare(tag + "prefill_logits", logits, d.logits, tol_of(tol, "prefill_logits", "max_abs_over_ref_maxabs", 5e-5),
          true);
  const int32_t am = rustasr::argmax(logits.data(), static_cast<int64_t>(logits.size()));
  const int32_t am_gold = rustasr::argmax(d.logits.data(), static_cast<int64_t>(d.logits.size()));
  report(am == am_gold, tag + "prefill argmax", std::to_string(am) + " vs golden " + std::to_string(am_gold));
  if (!d.hidden_last.empty())
    compare(tag + "prefill_hidden_last", hidden_last, d.hidden_last,
            tol_of(tol, "prefill_hidden_last", "max_abs_over_ref_maxabs", 1e-4), true);

  // 4. decode steps fed the golden ids: logits subset per step and greedy ids.
  const double dec_tol = tol_of(tol, "decode_logits_subset", "max_abs_over_prefill_logits_maxabs", 5e-5);
  const size_t n_sub = d.subset_ids.size();
  const size_t steps = d.generated.size();
  double worst = 0;
  bool ids_ok = am == d.generated.at(0);
  std::string first_bad;
  for (size_t k = 0; k < steps; ++k) {
    if (k > 0) {
      logits = s.step(static_cast<int32_t>(d.generated[k - 1]));
      const int32_t a = rustasr::argmax(logits.data(), static_cast<int64_t>(logits.size()));
      if (a != d.generated[k] && ids_ok) {
        ids_ok = false;
        first_bad = "step " + std::to_string(k) + ": " + std::to_string(a) + " vs " + std::to_string(d.generated[k]);
      }
    }
    const std::vector<float> sub = subset_of(logits, d.subset_ids);
    worst = std::max(worst, max_diff(sub.data(), d.subset.data() + k * n_sub, n_sub));
  }
  const double rel = worst / logit_scale;
  report(rel <= dec_tol, tag + "decode_logits_subset (" + std::to_string(steps) + " steps)",
         "max|d|/max|prefill golden| " + fmt(rel) + " (tol " + fmt(dec_tol) + ")");
  report(ids_ok, tag + "greedy ids (golden-fed)", first_bad);
  report(s.position() == static_cast<int64_t>(ids.size() + steps - 1), tag + "position");

  // 5. end to end: wav -> own mel -> own embeddings -> prefill -> 16 greedy ids (exact), the steps by
  // step_greedy (the SDK's decode loop).
  rustasr::Session e2e(model);
  rustasr::EncoderOutputs own = e2e.encode(mel.data(), T, false);
  std::vector<float> l = e2e.prefill(ids.data(), static_cast<int64_t>(ids.size()), own.embeds.data(),
                                     own.n_tokens);
  std::vector<int64_t> got;
  for (size_t k = 0; k < steps; ++k)
    got.push_back(k == 0 ? rustasr::argmax(l.data(), static_cast<int64_t>(l.size()))
                         : e2e.step_greedy(static_cast<int32_t>(got.back())));
  report(got == d.generated, tag + "end-to-end greedy ids");

  // 6. The same session encodes again after a prefill and steps: with lowMemory its encoder buffers were
  // freed after the first encode (RUSTASR_ENCODER_SCRATCH_KEEP_BYTES=0 here) and are allocated afresh.
  rustasr::EncoderOutputs again = s.encode(d.mel.data(), T, false);
  report(again.embeds == enc.embeds, tag + "second encode in a session: identical audio embeddings");

  // 7. Session::start, the production path: the wav and the prompt pieces around the audio pads in, the
  // first token out; then step_greedy. Offline (whole segment), incremental with all audio at once (no
  // window is final before the whole input is there: the same numbers), and a repeated start on the same
  // audio, which keeps the KV cache up to the first changed position.
  {
    size_t pad0 = 0, pads = 0;
    while (pad0 < ids.size() && ids[pad0] != info.audio_token_id) ++pad0;
    while (pad0 + pads < ids.size() && ids[pad0 + pads] == info.audio_token_id) ++pads;
    const std::vector<int32_t> head(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(pad0));
    const std::vector<int32_t> tail(ids.begin() + static_cast<std::ptrdiff_t>(pad0 + pads), ids.end());
    auto greedy = [&](rustasr::Session& ss, const rustasr::StartResult& r) {
      std::vector<int64_t> out{r.token};
      while (out.size() < steps) out.push_back(ss.step_greedy(static_cast<int32_t>(out.back())));
      return out;
    };
    for (const bool inc : {false, true}) {
      rustasr::Session st(model);
      st.append_audio(d.wav.data(), d.wav.size());
      const rustasr::StartResult r = st.start(head.data(), static_cast<int64_t>(head.size()), tail.data(),
                                              static_cast<int64_t>(tail.size()), rustasr::StartOptions{inc});
      const std::string what = tag + (inc ? "start (incremental, all audio)" : "start (offline)");
      report(r.audio_tokens == static_cast<int64_t>(pads) && r.prompt_tokens == static_cast<int64_t>(ids.size()),
             what + ": audio tokens and prompt length");
      report(greedy(st, r) == d.generated, what + ": greedy ids");
      if (inc) {
        const rustasr::StartResult again2 = st.start(head.data(), static_cast<int64_t>(head.size()), tail.data(),
                                                     static_cast<int64_t>(tail.size()), rustasr::StartOptions{true});
        const bool all_final = r.cached_tokens == r.audio_tokens;
        report(again2.token == r.token && (all_final ? again2.reused_tokens > static_cast<int64_t>(pad0)
                                                     : again2.reused_tokens >= static_cast<int64_t>(pad0)),
               what + ": a second start keeps the KV prefix, same first token",
               "reused " + std::to_string(again2.reused_tokens) + ", cached " + std::to_string(r.cached_tokens));
        report(greedy(st, again2) == d.generated, what + ": greedy ids after the second start");
      }
    }
    // Incremental in 2 s pieces, then a truncate back to the first piece: the same first token as a fresh
    // session on that piece alone (no window is cached below 8 s).
    const size_t piece = 32000;
    if (d.wav.size() > piece + 1000) {
      rustasr::Session a(model), b(model);
      for (size_t at = 0; at < d.wav.size(); at += piece) {
        a.append_audio(d.wav.data() + at, std::min(piece, d.wav.size() - at));
        a.start(head.data(), static_cast<int64_t>(head.size()), tail.data(), static_cast<int64_t>(tail.size()),
                rustasr::StartOptions{true});
      }
      a.truncate_audio(static_cast<int64_t>(piece));
      const rustasr::StartResult ra = a.start(head.data(), static_cast<int64_t>(head.size()), tail.data(),
                                              static_cast<int64_t>(tail.size()), rustasr::StartOptions{true});
      b.append_audio(d.wav.data(), piece);
      const rustasr::StartResult rb = b.start(head.data(), static_cast<int64_t>(head.size()), tail.data(),
                                              static_cast<int64_t>(tail.size()), rustasr::StartOptions{true});
      report(ra.token == rb.token && ra.audio_tokens == rb.audio_tokens && greedy(a, ra) == greedy(b, rb),
             tag + "incremental pieces, truncated back to the first: same as that piece alone");
    }
    // A cancelled session throws kAborted at its next call.
    rustasr::Session cx(model);
    cx.append_audio(d.wav.data(), d.wav.size());
    cx.cancel();
    bool aborted = false;
    try {
      cx.start(head.data(), static_cast<int64_t>(head.size()), tail.data(), static_cast<int64_t>(tail.size()));
    } catch (const rustasr::Error& e) {
      aborted = e.code() == ErrorCode::kAborted;
    }
    report(aborted, tag + "start after cancel(): ABORTED");
  }
}

// int8 decoder weights (ModelParams.quant = "int8"): the logits drift from the BF16 golden by the
// quantisation error, so the budget is the documented int8 one (docs/performance.md, test/int8.test.ts):
// max |d| / max |golden prefill logits| <= 0.02 for the prefill logits and the teacher-forced decode subset;
// step k's argmax must equal the golden id when its golden top-1/top-2 margin exceeds 2 * 0.02 * maxabs.
constexpr double kInt8LogitsTol = 0.02;
// int4 decoder weights (quant "int4": blocks of 32 columns, least-squares scales): the measured drift on the
// golden cases is 0.157-0.217 of max |golden prefill logits| (prefill) and 0.094-0.133 (decode subset) on every
// kernel (docs/performance.md, "int4"); the budget is 0.3 (1.4x the largest). Greedy ids are reported, not
// required.
constexpr double kInt4LogitsTol = 0.3;

void run_case_quant(const std::shared_ptr<const rustasr::Model>& model, const Case& c, const CaseData& d,
                    const std::string& kernel, const std::string& quant, double tol, bool ids_required) {
  const double kInt8LogitsTol = tol;
  const std::string tag = c.name + " [" + kernel + ", " + quant + "] ";
  rustasr::Session s(model);
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  const std::vector<int32_t> ids = to_i32(d.input_ids);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size() / static_cast<size_t>(info.hidden_size));
  std::vector<float> logits = s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
  const double scale = max_abs(d.logits.data(), d.logits.size());
  compare(tag + "prefill_logits", logits, d.logits, kInt8LogitsTol, true, scale);
  auto decided = [&](size_t k) {
    return k < d.margins.size() && d.margins[k] > 2 * kInt8LogitsTol * d.logit_maxabs[k];
  };
  const size_t n_sub = d.subset_ids.size();
  double worst = 0;
  std::string bad;
  size_t n_decided = 0;
  for (size_t k = 0; k < d.generated.size(); ++k) {
    if (k > 0) logits = s.step(static_cast<int32_t>(d.generated[k - 1]));
    const int32_t a = rustasr::argmax(logits.data(), static_cast<int64_t>(logits.size()));
    if (decided(k)) {
      ++n_decided;
      if (a != d.generated[k] && bad.empty())
        bad = "step " + std::to_string(k) + ": " + std::to_string(a) + " vs " + std::to_string(d.generated[k]);
    }
    const std::vector<float> sub = subset_of(logits, d.subset_ids);
    worst = std::max(worst, max_diff(sub.data(), d.subset.data() + k * n_sub, n_sub));
  }
  report(worst / scale <= kInt8LogitsTol, tag + "decode_logits_subset",
         "max|d|/max|prefill golden| " + fmt(worst / scale) + " (tol " + fmt(kInt8LogitsTol) + ")");
  if (ids_required) {
    report(bad.empty(), tag + "greedy ids at " + std::to_string(n_decided) + " decided steps", bad);
  } else {
    // Reported, not required (int4): the teacher-forced argmax against the golden ids at every step.
    size_t same = 0;
    rustasr::Session t(model);
    std::vector<float> l = t.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
    for (size_t k = 0; k < d.generated.size(); ++k) {
      if (k > 0) l = t.step(static_cast<int32_t>(d.generated[k - 1]));
      same += rustasr::argmax(l.data(), static_cast<int64_t>(l.size())) == d.generated[k] ? 1 : 0;
    }
    report(true, tag + "teacher-forced greedy ids equal to golden: " + std::to_string(same) + "/" +
                     std::to_string(d.generated.size()));
  }
}

void run_case_int8(const std::shared_ptr<const rustasr::Model>& model, const Case& c, const CaseData& d,
                   const std::string& kernel) {
  run_case_quant(model, c, d, kernel, "int8", kInt8LogitsTol, true);
}

// ---- forced-aligner cases (aligner/index.json) --------------------------------------------------------

struct AlignerCase {
  std::string name, model_dir, audio;
  int64_t prompt_len = 0;
};

struct AlignerData {
  JsonValue tolerances;  // aligner/index.json "tolerances"
  std::shared_ptr<SafetensorsArchive> st;
  std::vector<int64_t> input_ids, positions, classes;
  std::vector<float> logits, hidden, embeds, wav;
};

AlignerData load_aligner_case(const std::string& root, const AlignerCase& c, const JsonValue& tolerances) {
  AlignerData d;
  d.tolerances = tolerances;
  d.st = SafetensorsArchive::open(root + "/aligner/" + c.name + ".safetensors");
  const SafetensorsArchive& a = *d.st;
  d.input_ids = i64_tensor(a, "input_ids");
  d.positions = i64_tensor(a, "timestamp_positions");
  d.classes = i64_tensor(a, "argmax_classes");
  d.logits = f32_tensor(a, "slot_logits");
  d.hidden = f32_tensor(a, "slot_hidden");
  d.embeds = f32_tensor(a, "audio_embeds");
  d.wav = read_wav_pcm16(root + "/" + c.audio);
  return d;
}

double aligner_tol(const AlignerData& d, const char* key, double def) {
  return tol_of(d.tolerances, key, "max_abs_over_ref_maxabs", def);
}

// The ids after <|audio_end|>: the units and their <timestamp> pairs, as Aligner::align takes them.
std::vector<int32_t> aligner_text_ids(const std::shared_ptr<const rustasr::Model>& model, const AlignerData& d) {
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  std::vector<int32_t> ids = to_i32(d.input_ids);
  const auto end = std::find(ids.begin(), ids.end(), info.audio_end_token_id);
  return std::vector<int32_t>(end == ids.end() ? ids.end() : end + 1, ids.end());
}

void run_aligner_case(const std::shared_ptr<const rustasr::Model>& model, const AlignerCase& c, const AlignerData& d,
                      const std::string& kernel) {
  const std::string tag = c.name + " [" + kernel + "] ";
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  report(info.kind == "forced_aligner" && info.classify_num > 0, tag + "kind forced_aligner",
         info.kind + ", classify_num " + std::to_string(info.classify_num));
  rustasr::Aligner al(model);
  // 1. golden input ids + golden audio embeddings -> slot logits, hidden rows, classes.
  const std::vector<int32_t> ids = to_i32(d.input_ids);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size() / static_cast<size_t>(info.hidden_size));
  rustasr::AlignerOutput r = al.classify(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio, true, true);
  report(r.positions == d.positions, tag + "timestamp positions");
  compare(tag + "slot_logits", r.logits, d.logits, aligner_tol(d, "slot_logits", 5e-5), true);
  compare(tag + "slot_hidden", r.hidden, d.hidden, aligner_tol(d, "slot_hidden", 1e-4), true);
  report(std::vector<int64_t>(r.classes.begin(), r.classes.end()) == d.classes, tag + "argmax classes (golden-fed)");
  // 2. wav -> own mel -> own encoder: audio embeddings.
  rustasr::Session s(model);
  const std::vector<float> mel = s.mel(d.wav.data(), d.wav.size());
  const rustasr::EncoderOutputs enc =
      s.encode(mel.data(), static_cast<int64_t>(mel.size() / static_cast<size_t>(info.num_mel_bins)), false);
  compare(tag + "audio_embeds (own mel)", enc.embeds, d.embeds, aligner_tol(d, "audio_embeds", 1e-4), true);
  // 3. end to end: wav + text ids -> classes (exact); twice on one Aligner (reused buffers).
  const std::vector<int32_t> text = aligner_text_ids(model, d);
  for (int pass = 0; pass < 2; ++pass) {
    rustasr::AlignerOutput e = al.align(d.wav.data(), d.wav.size(), text.data(), static_cast<int64_t>(text.size()));
    report(std::vector<int64_t>(e.classes.begin(), e.classes.end()) == d.classes && e.positions == d.positions,
           tag + "end-to-end classes" + (pass ? " (second call)" : ""));
  }
}

// int8 aligner: the classifier logits within kInt8AlignerTol (its argmax margins are far smaller, so the
// classes are not compared). The tiny aligner is harsher on int8 than the ASR models (its q/k norms are scaled x2.5 for sharp
// attention, see the golden README): 0.05-0.08 measured, against <= 0.02 for the ASR cases. The SDK aligns
// in BF16 unless asked otherwise (docs/guide.md).
constexpr double kInt8AlignerTol = 0.1;

void run_aligner_case_int8(const std::shared_ptr<const rustasr::Model>& model, const AlignerCase& c,
                           const AlignerData& d, const std::string& kernel, double budget) {
  const std::string tag = c.name + " [" + kernel + ", int8] ";
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  rustasr::Aligner al(model);
  const std::vector<int32_t> ids = to_i32(d.input_ids);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size() / static_cast<size_t>(info.hidden_size));
  rustasr::AlignerOutput r = al.classify(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio, true);
  report(info.quant == "int8" && r.positions == d.positions, tag + "loads as int8, timestamp positions");
  compare(tag + "slot_logits", r.logits, d.logits, budget, true);
}

// ---- checkpoint rewriting (for the broken-input and dtype checks) -------------------------------------

struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
  std::string offsets;  // non-empty: written as the data_offsets array instead of the true [begin, end]
};

std::vector<Entry> entries_of(const SafetensorsArchive& a) {
  std::vector<Entry> out;
  for (const TensorInfo& t : a.tensors())
    out.push_back({t.name, t.dtype_str, t.shape, std::string(reinterpret_cast<const char*>(t.data), t.nbytes), ""});
  return out;
}

// Header JSON + data; `pad` spaces after the JSON (safetensors allows trailing whitespace).
std::string serialize(const std::vector<Entry>& es, size_t pad = 0, const std::string& extra_header = "") {
  std::string h = "{";
  std::string data;
  for (const Entry& e : es) {
    if (h.size() > 1) h += ",";
    h += "\"" + e.name + "\":{\"dtype\":\"" + e.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < e.shape.size(); ++i) h += (i ? "," : "") + std::to_string(e.shape[i]);
    h += "],\"data_offsets\":[" +
         (e.offsets.empty() ? std::to_string(data.size()) + "," + std::to_string(data.size() + e.bytes.size())
                            : e.offsets) +
         "]}";
    data += e.bytes;
  }
  h += extra_header + "}" + std::string(pad, ' ');
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + data;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  if (((x >> 23) & 0xff) == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const int shift = 14 - exp;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // may carry into the exponent: still correct
  return static_cast<uint16_t>(sign | h);
}

// BF16 entry re-encoded as F32 (exact) or F16 (rounded).
Entry convert(const Entry& e, const char* to) {
  if (e.dtype != "BF16") return e;
  Entry o = e;
  o.dtype = to;
  const size_t n = e.bytes.size() / 2;
  o.bytes.assign(n * (std::strcmp(to, "F32") == 0 ? 4 : 2), '\0');
  for (size_t i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, e.bytes.data() + 2 * i, 2);
    const uint32_t bits = static_cast<uint32_t>(b) << 16;
    if (std::strcmp(to, "F32") == 0) {
      std::memcpy(&o.bytes[4 * i], &bits, 4);
    } else {
      float f;
      std::memcpy(&f, &bits, 4);
      const uint16_t h = f32_to_f16(f);
      std::memcpy(&o.bytes[2 * i], &h, 2);
    }
  }
  return o;
}

struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base && *base ? base : "/tmp") + "/rustasr-golden-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const char* code_name(ErrorCode c) { return rustasr::error_code_name(c); }

// Runs f; it must throw rustasr::Error with `want`.
void expect_error(const std::string& what, ErrorCode want, const std::function<void()>& f,
                  const std::string& must_mention = "") {
  try {
    f();
    report(false, what, std::string("no error, expected ") + code_name(want));
  } catch (const rustasr::Error& e) {
    const bool mention = must_mention.empty() || std::string(e.what()).find(must_mention) != std::string::npos;
    report(e.code() == want && mention, what,
           std::string(code_name(e.code())) + (e.code() == want ? "" : std::string(" (expected ") + code_name(want) + ")") +
               (mention ? "" : ", message lacks \"" + must_mention + "\"") + " - " + e.what());
  } catch (const std::exception& e) {
    report(false, what, std::string("non-rustasr exception: ") + e.what());
  }
}

// Prefill of one case through `model` vs the golden logits, with a given relative tolerance.
void prefill_agrees(const std::string& what, const std::shared_ptr<const rustasr::Model>& model, const CaseData& d,
                    double tol) {
  rustasr::Session s(model);
  const std::vector<int32_t> ids = to_i32(d.input_ids);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size()) / rustasr::model_info(*model).hidden_size;
  std::vector<float> l = s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
  compare(what, l, d.logits, tol, true);
  l = s.step(static_cast<int32_t>(d.generated.at(0)));
  report(rustasr::argmax(l.data(), static_cast<int64_t>(l.size())) == d.generated.at(1), what + " step argmax");
}

// Broken aligner inputs through the C++ API.
void aligner_error_checks(const std::string& aligner_dir, const std::string& asr_dir, const AlignerData& d) {
  rustasr::ModelParams mp;
  auto asr = rustasr::load_model(asr_dir, mp);
  expect_error("Aligner over an ASR model", ErrorCode::kInvalidArgument, [&] { rustasr::Aligner a(asr); }, "forced-aligner");
  auto al_model = rustasr::load_model(aligner_dir, mp);
  rustasr::Aligner al(al_model);
  const rustasr::ModelInfo info = rustasr::model_info(*al_model);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size() / static_cast<size_t>(info.hidden_size));
  std::vector<int32_t> ids = to_i32(d.input_ids);
  std::vector<int32_t> no_slots;
  for (int32_t id : ids)
    if (id != info.timestamp_token_id) no_slots.push_back(id);
  expect_error("aligner input without <timestamp>", ErrorCode::kInvalidArgument, [&] {
    al.classify(no_slots.data(), static_cast<int64_t>(no_slots.size()), d.embeds.data(), n_audio);
  }, "timestamp");
  expect_error("aligner pads != embeddings", ErrorCode::kInvalidArgument, [&] {
    al.classify(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio - 1);
  }, "audio pad");
  std::vector<int32_t> bad = ids;
  bad.back() = info.vocab_size;
  expect_error("aligner id outside the vocabulary", ErrorCode::kInvalidArgument, [&] {
    al.classify(bad.data(), static_cast<int64_t>(bad.size()), d.embeds.data(), n_audio);
  }, "out of range");
  expect_error("aligner text ids holding an audio pad", ErrorCode::kInvalidArgument, [&] {
    const int32_t t[3] = {info.audio_token_id, info.timestamp_token_id, info.timestamp_token_id};
    al.align(d.wav.data(), d.wav.size(), t, 3);
  });
  // config.json of the aligner without classify_num / timestamp fields.
  TempDir tmp;
  const std::string cfg = read_file(aligner_dir + "/config.json");
  auto variant = [&](const std::string& from, const std::string& to) {
    const size_t p = cfg.find(from);
    if (p == std::string::npos) throw std::runtime_error("aligner config has no " + from);
    const std::string dir = tmp.path + "/" + std::to_string(std::hash<std::string>()(from));
    fs::create_directory(dir);
    write_file(dir + "/config.json", std::string(cfg).replace(p, from.size(), to));
    fs::create_symlink(aligner_dir + "/model.safetensors", dir + "/model.safetensors");
    return dir;
  };
  expect_error("aligner config without classify_num", ErrorCode::kInvalidConfig,
               [&] { rustasr::load_model(variant("\"classify_num\"", "\"classify_nuX\""), mp); }, "classify_num");
  expect_error("aligner config without timestamp_token_id", ErrorCode::kInvalidConfig,
               [&] { rustasr::load_model(variant("\"timestamp_token_id\"", "\"timestamp_token_iX\""), mp); },
               "timestamp_token_id");
  expect_error("aligner config with timestamp_segment_time 0", ErrorCode::kInvalidConfig,
               [&] { rustasr::load_model(variant("\"timestamp_segment_time\": 80", "\"timestamp_segment_time\": 0"), mp); },
               "timestamp_segment_time");
  expect_error("aligner checkpoint read as ASR (model_type qwen3_asr): head shape", ErrorCode::kTensorShape,
               [&] { rustasr::load_model(variant("\"qwen3_forced_aligner\"", "\"qwen3_asr\""), mp); }, "lm_head");
}

void error_checks(const std::string& model_src, const CaseData& d, const std::string& kernel, int threads) {
  TempDir tmp;
  rustasr::ModelParams mp;
  mp.threads = threads;
  mp.kernel = kernel;
  const std::string cfg = read_file(model_src + "/config.json");
  const std::string pre = read_file(model_src + "/preprocessor_config.json");
  auto orig = SafetensorsArchive::open(model_src + "/model.safetensors");
  const std::vector<Entry> base = entries_of(*orig);
  const std::string st_bytes = read_file(model_src + "/model.safetensors");

  int counter = 0;
  // A model directory with the given files (nullptr: the original bytes; "" with `omit`: absent).
  auto make_dir = [&](const std::string* config, const std::string* weights, bool with_weights = true) {
    const std::string dir = tmp.path + "/m" + std::to_string(counter++);
    fs::create_directory(dir);
    write_file(dir + "/config.json", config ? *config : cfg);
    write_file(dir + "/preprocessor_config.json", pre);
    if (with_weights) {
      if (weights) write_file(dir + "/model.safetensors", *weights);
      else fs::create_symlink(model_src + "/model.safetensors", dir + "/model.safetensors");
    }
    return dir;
  };
  auto load = [&](const std::string& dir) { return [dir, mp] { rustasr::load_model(dir, mp); }; };
  auto with_weights = [&](const std::string& bytes) { return make_dir(nullptr, &bytes); };
  auto with_config = [&](const std::string& text) { return make_dir(&text, nullptr); };
  auto replace_first = [](std::string s, const std::string& from, const std::string& to) {
    const size_t p = s.find(from);
    if (p == std::string::npos) throw std::runtime_error("config has no " + from);
    return s.replace(p, from.size(), to);
  };

  // Error code names: stable and distinct.
  {
    const ErrorCode all[] = {ErrorCode::kInvalidArgument, ErrorCode::kModelNotFound,   ErrorCode::kInvalidConfig,
                             ErrorCode::kMissingTensor,   ErrorCode::kTensorShape,     ErrorCode::kUnsupportedDtype,
                             ErrorCode::kCorruptWeights,  ErrorCode::kIo,              ErrorCode::kAborted,
                             ErrorCode::kUnsupportedDevice, ErrorCode::kInternal};
    std::vector<std::string> names;
    for (ErrorCode c : all) names.push_back(code_name(c));
    std::vector<std::string> sorted = names;
    std::sort(sorted.begin(), sorted.end());
    report(std::unique(sorted.begin(), sorted.end()) == sorted.end() && names[6] == "CORRUPT_WEIGHTS",
           "error_code_name: distinct stable names");
  }

  // ---- model directory
  expect_error("missing directory", ErrorCode::kModelNotFound, load(tmp.path + "/does-not-exist"));
  {
    const std::string dir = tmp.path + "/empty";
    fs::create_directory(dir);
    expect_error("directory without config.json", ErrorCode::kModelNotFound, load(dir), "config.json");
  }
  expect_error("missing model.safetensors", ErrorCode::kModelNotFound, load(make_dir(nullptr, nullptr, false)),
               "model.safetensors");
  {
    const std::string dir = make_dir(nullptr, nullptr, false);
    fs::create_directory(dir + "/model.safetensors");
    expect_error("model.safetensors is a directory", ErrorCode::kIo, load(dir));
  }

  // ---- config.json
  expect_error("malformed config.json", ErrorCode::kInvalidConfig, load(with_config(cfg.substr(0, cfg.size() / 2))));
  expect_error("config.json is an array", ErrorCode::kInvalidConfig, load(with_config("[1, 2]")));
  expect_error("config.json without vocab_size", ErrorCode::kInvalidConfig,
               load(with_config(replace_first(cfg, "\"vocab_size\"", "\"vocab_sizX\""))), "vocab_size");
  expect_error("config.json with n_window 51", ErrorCode::kInvalidConfig,
               load(with_config(replace_first(cfg, "\"n_window\": 50", "\"n_window\": 51"))), "n_window");
  expect_error("config.json with string d_model", ErrorCode::kInvalidConfig,
               load(with_config(replace_first(cfg, "\"d_model\": ", "\"d_model\": \"64\", \"x_d_model\": "))),
               "d_model");
  {
    const std::string dir = make_dir(nullptr, nullptr);
    write_file(dir + "/preprocessor_config.json", "{\"feature_size\": 80}");
    expect_error("preprocessor feature_size mismatch", ErrorCode::kInvalidConfig, load(dir), "feature_size");
    write_file(dir + "/preprocessor_config.json", "{\"n_fft\": ");
    expect_error("malformed preprocessor_config.json", ErrorCode::kInvalidConfig, load(dir));
  }

  // ---- hostile model directories (issue 18): nothing blocks, nothing large is read or allocated.
  {
    // A FIFO in place of each file the engine reads: kIo at once (a plain open() would block forever).
    for (const char* name : {"config.json", "model.safetensors", "model.safetensors.index.json",
                             "preprocessor_config.json"}) {
      const std::string dir = make_dir(nullptr, nullptr);
      fs::remove(dir + "/" + name);
      if (::mkfifo((dir + "/" + name).c_str(), 0600) != 0) {
        report(false, std::string("mkfifo ") + name, std::strerror(errno));
        continue;
      }
      expect_error(std::string("FIFO ") + name, ErrorCode::kIo, load(dir), "(a FIFO)");
    }
    // A symlink to a character device: kIo, nothing read.
    for (const char* name : {"config.json", "preprocessor_config.json", "model.safetensors.index.json"}) {
      const std::string dir = make_dir(nullptr, nullptr);
      fs::remove(dir + "/" + name);
      fs::create_symlink("/dev/zero", dir + "/" + name);
      expect_error(std::string(name) + " -> /dev/zero", ErrorCode::kIo, load(dir), "(a character device)");
    }
    // Over the size caps (sparse files: refused from their size, never read).
    const std::pair<const char*, std::pair<size_t, ErrorCode>> caps[] = {
        {"config.json", {rustasr::kMaxConfigBytes, ErrorCode::kInvalidConfig}},
        {"preprocessor_config.json", {rustasr::kMaxConfigBytes, ErrorCode::kInvalidConfig}},
        {"model.safetensors.index.json", {rustasr::kMaxIndexBytes, ErrorCode::kCorruptWeights}}};
    for (const auto& c : caps) {
      const std::string dir = make_dir(nullptr, nullptr);
      write_file(dir + "/" + c.first, "");
      if (::truncate((dir + "/" + c.first).c_str(), static_cast<off_t>(c.second.first + 1)) != 0) {
        report(false, std::string("truncate ") + c.first, std::strerror(errno));
        continue;
      }
      expect_error(std::string(c.first) + " over its cap", c.second.second, load(dir), "-byte limit");
    }
    // preprocessor_config.json: only the official processor's values.
    const std::pair<const char*, const char*> pre_bad[] = {
        {"{\"n_fft\": 20014}", "n_fft"},         {"{\"n_fft\": 268435456}", "n_fft"},
        {"{\"hop_length\": 1}", "hop_length"},   {"{\"sampling_rate\": 2}", "sampling_rate"},
        {"{\"n_fft\": \"400\"}", "n_fft"},      {"{\"hop_length\": 160.5}", "hop_length"},
        {"[400]", "object"}};
    for (const auto& b : pre_bad) {
      const std::string dir = make_dir(nullptr, nullptr);
      write_file(dir + "/preprocessor_config.json", b.first);
      expect_error(std::string("preprocessor_config.json ") + b.first, ErrorCode::kInvalidConfig, load(dir), b.second);
    }
    {
      const std::string dir = make_dir(nullptr, nullptr);
      write_file(dir + "/preprocessor_config.json",
                 "{\"n_fft\": 400.0, \"hop_length\": 160, \"sampling_rate\": 16000, \"feature_size\": 128.0}");
      try {
        auto m = rustasr::load_model(dir, mp);
        const rustasr::ModelInfo mi = rustasr::model_info(*m);
        report(mi.sample_rate == 16000 && mi.hop_length == 160, "preprocessor_config.json with integral floats loads");
      } catch (const std::exception& e) {
        report(false, "preprocessor_config.json with integral floats loads", e.what());
      }
    }
    // Layer counts and dimensions: checked against the tensors and bounds before anything is allocated.
    const std::string enc_layers = "\"encoder_layers\": " + std::to_string(rustasr::model_info(
                                                                 *rustasr::load_model(model_src, mp)).encoder_layers);
    expect_error("encoder_layers 1000000", ErrorCode::kInvalidConfig,
                 load(with_config(replace_first(cfg, enc_layers, "\"encoder_layers\": 1000000"))), "encoder_layers");
    expect_error("encoder_layers 2147483647", ErrorCode::kInvalidConfig,
                 load(with_config(replace_first(cfg, enc_layers, "\"encoder_layers\": 2147483647"))), "limit");
    expect_error("encoder_layers 4e6", ErrorCode::kInvalidConfig,
                 load(with_config(replace_first(cfg, enc_layers, "\"encoder_layers\": 4e6"))), "encoder_layers");
    {
      // One layer more than the weights hold (the text decoder's num_hidden_layers is the last one).
      const size_t p = cfg.rfind("\"num_hidden_layers\": ");
      const size_t v = p + std::strlen("\"num_hidden_layers\": ");
      const int n = std::atoi(cfg.c_str() + v);
      std::string c = cfg;
      c.replace(v, std::to_string(n).size(), std::to_string(n + 1));
      expect_error("num_hidden_layers one more than the weights", ErrorCode::kInvalidConfig, load(with_config(c)),
                   "but the weights hold " + std::to_string(n));
    }
    {
      // An integral float is that integer: hidden_size 64.0 loads like 64.
      const size_t p = cfg.rfind("\"hidden_size\": ");
      const size_t v = p + std::strlen("\"hidden_size\": ");
      const std::string n = std::to_string(std::atoi(cfg.c_str() + v));
      std::string c = cfg;
      c.replace(v, n.size(), n + ".0");
      try {
        rustasr::load_model(with_config(c), mp);
        report(true, "hidden_size written as " + n + ".0 loads");
      } catch (const std::exception& e) {
        report(false, "hidden_size written as " + n + ".0 loads", e.what());
      }
      c = cfg;
      c.replace(v, n.size(), n + ".5");
      expect_error("hidden_size " + n + ".5", ErrorCode::kInvalidConfig, load(with_config(c)), "(not an integer)");
    }
  }

  // ---- model.safetensors
  expect_error("4-byte weights file", ErrorCode::kCorruptWeights, load(with_weights("abcd")));
  expect_error("header length beyond the file", ErrorCode::kCorruptWeights, load(with_weights([&] {
                 std::string b = st_bytes.substr(0, 4096);
                 b[0] = '\xff', b[1] = '\xff', b[2] = '\x01';
                 return b;
               }())));
  expect_error("header is not JSON", ErrorCode::kCorruptWeights,
               load(with_weights(std::string("\x06\0\0\0\0\0\0\0{bad}x", 14))));
  expect_error("header is a JSON array", ErrorCode::kCorruptWeights,
               load(with_weights(std::string("\x02\0\0\0\0\0\0\0[]", 10))));
  expect_error("truncated weights file", ErrorCode::kCorruptWeights,
               load(with_weights(st_bytes.substr(0, st_bytes.size() - 4096))));
  {
    // Offsets past the data section: rewrite the first tensor's offsets.
    std::vector<Entry> es = base;
    size_t total = 0;
    for (const Entry& e : es) total += e.bytes.size();
    es[0].offsets = std::to_string(total) + "," + std::to_string(total + es[0].bytes.size());
    expect_error("data_offsets outside the file", ErrorCode::kCorruptWeights, load(with_weights(serialize(es))),
                 base[0].name);
    es[0].offsets = "32,0";
    expect_error("data_offsets begin > end", ErrorCode::kCorruptWeights, load(with_weights(serialize(es))),
                 base[0].name);
    es[0].offsets = "0";
    expect_error("data_offsets with one element", ErrorCode::kCorruptWeights, load(with_weights(serialize(es))),
                 base[0].name);
  }
  {
    std::vector<Entry> es = base;
    es[1].shape.back() += 1;  // byte size no longer matches shape * dtype
    std::string b = serialize(es);
    // serialize() derives offsets from the bytes, so the shape now disagrees with the span.
    expect_error("shape disagrees with data_offsets", ErrorCode::kCorruptWeights, load(with_weights(b)), es[1].name);
  }
  {
    std::string b = serialize(base, 0, ",\"" + base[0].name + "\":{}");
    expect_error("duplicate tensor name in header", ErrorCode::kCorruptWeights, load(with_weights(b)));
  }
  {
    // The second tensor's bytes moved onto the first's (same span length, inside the data section).
    std::vector<Entry> es = base;
    es[1].offsets = "0," + std::to_string(es[1].bytes.size());
    expect_error("overlapping data_offsets", ErrorCode::kCorruptWeights, load(with_weights(serialize(es))), "overlap");
  }
  {
    const std::string name = "thinker.model.layers.1.mlp.up_proj.weight";
    std::vector<Entry> es;
    for (const Entry& e : base)
      if (e.name != name) es.push_back(e);
    expect_error("missing tensor", ErrorCode::kMissingTensor, load(with_weights(serialize(es))), name);
  }
  {
    const std::string name = "thinker.audio_tower.layers.0.fc2.weight";
    std::vector<Entry> es = base;
    for (Entry& e : es)
      if (e.name == name) std::swap(e.shape[0], e.shape[1]);
    expect_error("transposed shape", ErrorCode::kTensorShape, load(with_weights(serialize(es))), name);
  }
  for (const char* dt : {"I16", "BF17"}) {
    const std::string name = "thinker.model.norm.weight";
    std::vector<Entry> es = base;
    for (Entry& e : es)
      if (e.name == name) e.dtype = dt;
    expect_error(std::string("dtype ") + dt, ErrorCode::kUnsupportedDtype, load(with_weights(serialize(es))), dt);
  }

  // ---- sharded checkpoints
  auto sharded_dir = [&](const std::string& index_text, bool write_shards) {
    const std::string dir = make_dir(nullptr, nullptr, false);
    write_file(dir + "/model.safetensors.index.json", index_text);
    if (write_shards) {
      std::vector<Entry> a(base.begin(), base.begin() + base.size() / 2), b(base.begin() + base.size() / 2, base.end());
      write_file(dir + "/model-00001-of-00002.safetensors", serialize(a));
      write_file(dir + "/model-00002-of-00002.safetensors", serialize(b));
    }
    return dir;
  };
  std::string index = "{\"metadata\":{},\"weight_map\":{";
  for (size_t i = 0; i < base.size(); ++i)
    index += std::string(i ? "," : "") + "\"" + base[i].name + "\":\"model-0000" + (i < base.size() / 2 ? "1" : "2") +
             "-of-00002.safetensors\"";
  index += "}}";
  expect_error("index naming ../ shard", ErrorCode::kCorruptWeights,
               load(sharded_dir("{\"weight_map\":{\"a\":\"../model.safetensors\"}}", false)), "invalid shard");
  expect_error("index naming a missing shard", ErrorCode::kModelNotFound,
               load(sharded_dir("{\"weight_map\":{\"a\":\"nope.safetensors\"}}", false)));
  expect_error("malformed index", ErrorCode::kCorruptWeights, load(sharded_dir("{\"weight_map\":", false)));
  expect_error("index without weight_map", ErrorCode::kCorruptWeights, load(sharded_dir("{}", false)));
  {
    std::string bad = index;
    bad.replace(bad.find("model-00001"), 11, "model-00002");  // first tensor attributed to the wrong shard
    expect_error("index attributes a tensor to the wrong shard", ErrorCode::kCorruptWeights,
                 load(sharded_dir(bad, true)), base[0].name);
  }
  try {
    auto m = rustasr::load_model(sharded_dir(index, true), mp);
    prefill_agrees("two-shard checkpoint: prefill_logits", m, d, 5e-5);
  } catch (const std::exception& e) {
    report(false, "two-shard checkpoint loads", e.what());
  }

  // ---- re-encoded checkpoints that must still work
  try {
    std::vector<Entry> es;
    for (const Entry& e : base) es.push_back(convert(e, "F32"));
    // Pad the header so the data section starts at an offset = 2 (mod 4): F32 tensors are misaligned in the
    // mapping and go through SafetensorsArchive::aligned_data's copy.
    std::string b = serialize(es);
    const size_t data_start = 8 + (b.size() - 8 - [&] {
                                size_t s = 0;
                                for (const Entry& e : es) s += e.bytes.size();
                                return s;
                              }());
    const size_t pad = (data_start % 4 == 2) ? 0 : (4 + 2 - data_start % 4) % 4;
    b = serialize(es, pad);
    const std::string dir = with_weights(b);
    auto m = rustasr::load_model(dir, mp);
    prefill_agrees("F32 checkpoint (misaligned data): prefill_logits", m, d, 5e-5);
    // int8 from F32 weights (the portable quantiser: the AVX-512 one takes BF16 only) must equal int8 from
    // the BF16 checkpoint: same values, same rounding.
    rustasr::ModelParams q = mp;
    q.quant = "int8";
    auto from_f32 = rustasr::load_model(dir, q);
    auto from_bf16 = rustasr::load_model(model_src, q);
    const std::vector<int32_t> ids = to_i32(d.input_ids);
    const int64_t n_audio = static_cast<int64_t>(d.embeds.size()) / rustasr::model_info(*m).hidden_size;
    rustasr::Session s1(from_f32), s2(from_bf16);
    const std::vector<float> l1 = s1.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
    const std::vector<float> l2 = s2.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
    compare("int8 from F32 == int8 from BF16: prefill_logits", l1, l2, 1e-6, true);
  } catch (const std::exception& e) {
    report(false, "F32 checkpoint loads", e.what());
  }
  try {
    std::vector<Entry> es;
    for (const Entry& e : base) es.push_back(convert(e, "F16"));
    const std::string dir = with_weights(serialize(es));
    auto m = rustasr::load_model(dir, mp);
    prefill_agrees("F16 checkpoint: prefill_logits", m, d, 5e-3);  // bf16 -> f16 rounds tiny weights
    rustasr::ModelParams q = mp;
    q.quant = "int8";
    auto m8 = rustasr::load_model(dir, q);
    rustasr::Session s8(m8);
    const std::vector<int32_t> ids = to_i32(d.input_ids);
    const int64_t n_audio = static_cast<int64_t>(d.embeds.size()) / rustasr::model_info(*m).hidden_size;
    compare("F16 checkpoint as int8: prefill_logits",
            s8.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio), d.logits,
            kInt8LogitsTol, true);
  } catch (const std::exception& e) {
    report(false, "F16 checkpoint loads", e.what());
  }
  try {
    std::vector<Entry> es;
    for (const Entry& e : base)
      if (e.name != "thinker.lm_head.weight") es.push_back(e);
    std::string tied = cfg;
    for (size_t p; (p = tied.find("\"tie_word_embeddings\": false")) != std::string::npos;)
      tied.replace(p, 28, "\"tie_word_embeddings\": true");
    const std::string w = serialize(es);
    auto m = rustasr::load_model(make_dir(&tied, &w), mp);
    const rustasr::ModelInfo info = rustasr::model_info(*m);
    rustasr::Session s(m);
    const std::vector<int32_t> ids = to_i32(d.input_ids);
    const int64_t n_audio = static_cast<int64_t>(d.embeds.size()) / info.hidden_size;
    std::vector<float> l = s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
    bool finite = true;
    for (float v : l) finite = finite && std::isfinite(v);
    report(info.tied_embeddings && finite && l.size() == static_cast<size_t>(info.vocab_size),
           "tied embeddings without lm_head: loads, finite logits");
  } catch (const std::exception& e) {
    report(false, "tied embeddings without lm_head", e.what());
  }

  // ---- parameters and Session arguments
  {
    rustasr::ModelParams p = mp;
    p.kernel = "bogus";
    expect_error("unknown kernel name", ErrorCode::kInvalidArgument, [&] { rustasr::load_model(model_src, p); });
    const std::vector<std::string> ks = rustasr::cpu_kernels();
    for (const char* k : {"neon", "avx2", "avx512f", "avx512bf16"}) {
      if (std::find(ks.begin(), ks.end(), k) != ks.end()) continue;
      p.kernel = k;
      expect_error(std::string("kernel ") + k + " unsupported here", ErrorCode::kUnsupportedDevice,
                   [&] { rustasr::load_model(model_src, p); });
    }
    p = mp;
    p.threads = -1;
    expect_error("threads -1", ErrorCode::kInvalidArgument, [&] { rustasr::load_model(model_src, p); });
    p.threads = 2147483647;  // refused before any thread starts (it used to exhaust the OS's threads)
    expect_error("threads 2147483647", ErrorCode::kInvalidArgument, [&] { rustasr::load_model(model_src, p); },
                 "at most");
    p = mp;
    p.quant = "int3";
    expect_error("quant int3", ErrorCode::kInvalidArgument, [&] { rustasr::load_model(model_src, p); });
  }
  auto model = rustasr::load_model(model_src, mp);
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  report(info.sample_rate == 16000 && info.hop_length == 160 && info.num_mel_bins == 128, "model_info");
  rustasr::Session s(model);
  std::vector<float> quiet(100, 0.f);
  expect_error("mel of 100 samples", ErrorCode::kInvalidArgument, [&] { s.mel(quiet.data(), quiet.size()); });
  std::vector<float> nan(16000, 0.f);
  nan[1234] = std::numeric_limits<float>::quiet_NaN();
  expect_error("mel with NaN", ErrorCode::kInvalidArgument, [&] { s.mel(nan.data(), nan.size()); });
  {
    std::vector<float> silence(16000, 0.f);
    std::vector<float> m = s.mel(silence.data(), silence.size());
    bool finite = m.size() == 128u * 100u;
    for (float v : m) finite = finite && std::isfinite(v);
    report(finite, "mel of 1 s of silence is finite");
  }
  expect_error("encode 0 frames", ErrorCode::kInvalidArgument, [&] { s.encode(d.mel.data(), 0); });
  expect_error("step before prefill", ErrorCode::kInvalidArgument, [&] { s.step(1); });
  const std::vector<int32_t> ids = to_i32(d.input_ids);
  const int64_t n_audio = static_cast<int64_t>(d.embeds.size()) / info.hidden_size;
  expect_error("prefill of 0 ids", ErrorCode::kInvalidArgument, [&] { s.prefill(ids.data(), 0, nullptr, 0); });
  {
    std::vector<int32_t> bad = ids;
    bad[0] = -1;
    expect_error("prefill with id -1", ErrorCode::kInvalidArgument,
                 [&] { s.prefill(bad.data(), static_cast<int64_t>(bad.size()), d.embeds.data(), n_audio); });
    bad[0] = info.vocab_size;
    expect_error("prefill with id = vocab", ErrorCode::kInvalidArgument,
                 [&] { s.prefill(bad.data(), static_cast<int64_t>(bad.size()), d.embeds.data(), n_audio); });
  }
  expect_error("prefill with one audio embedding too few", ErrorCode::kInvalidArgument,
               [&] { s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio - 1); });
  s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
  expect_error("step with id = vocab", ErrorCode::kInvalidArgument, [&] { s.step(info.vocab_size); });
  expect_error("Session without a model", ErrorCode::kInvalidArgument, [] { rustasr::Session x(nullptr); });
  // Prefill again on the same session resets the cache: same logits as a fresh session.
  {
    std::vector<float> a = s.prefill(ids.data(), static_cast<int64_t>(ids.size()), d.embeds.data(), n_audio);
    compare("prefill twice on one session", a, d.logits, 5e-5, true);
  }
}

// Batched decoding (model/batch.h): the golden cases of one model decode at the same time, each on its own
// thread, joining and leaving at different steps (a prefill of one runs while the others step); each
// session's logits at every step must equal bit for bit those of the same session decoding alone, and the
// model's batcher must have served several sessions in one pass at least once.
void batch_checks(const std::shared_ptr<const rustasr::Model>& model, const std::vector<std::pair<std::string, const CaseData*>>& cases,
                  const std::string& tag) {
  if (cases.empty() || !model->backend().rows_independent()) return;
  const rustasr::ModelInfo info = rustasr::model_info(*model);
  struct Run {
    std::vector<int32_t> head, tail;
    const CaseData* d;
    size_t steps, join_after;  // steps to decode; start once the first session has done this many
    std::vector<std::vector<float>> solo, batched;
    std::string error;
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < cases.size() && i < 4; ++i) {
    const CaseData& d = *cases[i].second;
    const std::vector<int32_t> ids = to_i32(d.input_ids);
    size_t pad0 = 0, pads = 0;
    while (pad0 < ids.size() && ids[pad0] != info.audio_token_id) ++pad0;
    while (pad0 + pads < ids.size() && ids[pad0 + pads] == info.audio_token_id) ++pads;
    Run r;
    r.head.assign(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(pad0));
    r.tail.assign(ids.begin() + static_cast<std::ptrdiff_t>(pad0 + pads), ids.end());
    r.d = &d;
    const size_t steps_of[4] = {14, 6, 12, 9}, join_of[4] = {0, 0, 3, 5};
    r.steps = steps_of[i];
    r.join_after = join_of[i];
    runs.push_back(std::move(r));
  }
  // Sessions that start together wait for each other's start() before stepping, so that they step together
  // however long one prefill takes (the later ones join mid-way without waiting).
  std::atomic<size_t> started{0};
  size_t together = 0;
  for (const Run& r : runs) together += r.join_after == 0 ? 1 : 0;
  bool solo = true;  // the reference runs, one by one (no waiting)
  // Decodes `r` on session s: start, then `steps` steps fed their own argmax, every step's logits kept.
  auto decode = [&](Run& r, std::vector<std::vector<float>>& out, std::atomic<size_t>* progress) {
    rustasr::Session s(model);
    s.append_audio(r.d->wav.data(), r.d->wav.size());
    int32_t tok = s.start(r.head.data(), static_cast<int64_t>(r.head.size()), r.tail.data(),
                          static_cast<int64_t>(r.tail.size())).token;
    if (!solo && r.join_after == 0) {
      started.fetch_add(1);
      while (started.load() < together) std::this_thread::yield();
    }
    for (size_t k = 0; k < r.steps; ++k) {
      out.push_back(s.step(tok));
      tok = rustasr::argmax(out.back().data(), static_cast<int64_t>(out.back().size()));
      if (progress) progress->fetch_add(1);
    }
  };
  for (Run& r : runs) decode(r, r.solo, nullptr);
  solo = false;
  const rustasr::BatchStats before = rustasr::batch_stats(*model);
  std::atomic<size_t> first_done{0};
  std::vector<std::thread> threads;
  for (size_t i = 0; i < runs.size(); ++i)
    threads.emplace_back([&, i] {
      Run& r = runs[i];
      try {
        while (first_done.load() < r.join_after) std::this_thread::yield();
        decode(r, r.batched, i == 0 ? &first_done : nullptr);
      } catch (const std::exception& e) {
        r.error = e.what();
        first_done.store(1000);
      }
    });
  for (std::thread& t : threads) t.join();
  const rustasr::BatchStats after = rustasr::batch_stats(*model);
  bool same = true;
  std::string detail;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    if (!r.error.empty()) {
      same = false;
      detail += " " + cases[i].first + ": " + r.error;
      continue;
    }
    for (size_t k = 0; k < r.steps; ++k)
      if (k >= r.batched.size() || r.batched[k].size() != r.solo[k].size() ||
          std::memcmp(r.batched[k].data(), r.solo[k].data(), r.solo[k].size() * sizeof(float)) != 0) {
        same = false;
        detail += " " + cases[i].first + " differs at step " + std::to_string(k);
        break;
      }
  }
  const int64_t batches = after.batches - before.batches, rows = after.rows - before.rows;
  report(same, tag + "batched decoding: " + std::to_string(runs.size()) + " sessions joining and leaving, logits bit-identical to alone",
         detail);
  if (g_serial)
    std::printf("skip %sbatched decoding: sessions shared weight passes (--serial: %lld session steps in %lld passes)\n",
                tag.c_str(), static_cast<long long>(rows), static_cast<long long>(batches));
  else
    report(rows > batches && batches > 0, tag + "batched decoding: sessions shared weight passes",
           std::to_string(rows) + " session steps in " + std::to_string(batches) + " passes");
}

// Row i of x [n, cols] times row r of w [rows, cols] in float64, and the sum of the products' magnitudes (the
// scale the batched-product checks measure their errors against).
void ref_dot(const std::vector<float>& x, const std::vector<float>& wf, int64_t i, int64_t r, int64_t cols,
             double* ref, double* mag) {
  *ref = 0;
  *mag = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const double p = static_cast<double>(x[static_cast<size_t>(i * cols + c)]) * wf[static_cast<size_t>(r * cols + c)];
    *ref += p;
    *mag += std::fabs(p);
  }
}

// Backend::linear / linear_multi on shapes the tiny model never has (column counts that are not a multiple
// of any vector width, row counts that leave remainders, 1..40 activation rows: the gemv and the gemm paths)
// for every kernel and weight dtype, against a float64 reference. Buffers are sized exactly, so the
// sanitizer builds see any read past a row or a matrix.
void kernel_checks() {
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return static_cast<float>(static_cast<double>(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  };
  for (const std::string& k : rustasr::cpu_kernels()) {
    rustasr::BackendOptions bo;
    bo.threads = 2;
    bo.kernel = k;
    std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
    for (const char* dt : {"BF16", "F16", "F32"}) {
      double worst = 0;
      bool rows_alone = true;
      for (const auto& shape :
           {std::pair<int64_t, int64_t>{37, 83}, {5, 1}, {130, 257}, {17, 33}, {70, 1100}, {29, 2100}}) {
        const int64_t rows = shape.first, cols = shape.second;
        // Weights: values exactly representable in BF16 (hence in F16 and F32 too, for this range).
        std::vector<float> wf(static_cast<size_t>(rows * cols)), bf(static_cast<size_t>(rows));
        for (float& v : wf) {
          const float f = next() * 0.5f;
          uint32_t b;
          std::memcpy(&b, &f, 4);
          b &= 0xffff0000u;
          std::memcpy(&v, &b, 4);
        }
        for (float& v : bf) v = next();
        std::unique_ptr<uint16_t[]> w16(new uint16_t[wf.size()]);
        for (size_t i = 0; i < wf.size(); ++i) {
          uint32_t b;
          std::memcpy(&b, &wf[i], 4);
          w16[i] = std::strcmp(dt, "BF16") == 0 ? static_cast<uint16_t>(b >> 16) : f32_to_f16(wf[i]);
        }
        rustasr::Weight w, bias;
        w.dtype = std::strcmp(dt, "BF16") == 0 ? rustasr::DType::kBF16
                  : std::strcmp(dt, "F16") == 0 ? rustasr::DType::kF16 : rustasr::DType::kF32;
        w.data = w.dtype == rustasr::DType::kF32 ? static_cast<const void*>(wf.data()) : w16.get();
        w.rows = rows;
        w.cols = cols;
        w.name = "test.W";
        bias.dtype = rustasr::DType::kF32;
        bias.data = bf.data();
        bias.rows = 1;
        bias.cols = rows;
        bias.name = "test.b";
        for (int64_t n : {1, 2, 3, 4, 5, 9, 40, 131}) {
          std::vector<float> x(static_cast<size_t>(n * cols)), y(static_cast<size_t>(n * rows));
          std::vector<float> y2(y.size()), y3(y.size());
          for (float& v : x) v = next();
          be->linear(x.data(), n, w, bias, y.data());
          // Up to 4 rows (the matrix-vector path): each row's result is the one it gets alone, bit for bit
          // (batched decoding relies on it).
          if (n <= 4)
            for (int64_t i = 0; i < n; ++i) {
              std::vector<float> one(static_cast<size_t>(rows));
              be->linear(x.data() + i * cols, 1, w, bias, one.data());
              if (std::memcmp(one.data(), y.data() + i * rows, static_cast<size_t>(rows) * sizeof(float)) != 0) rows_alone = false;
            }
          const rustasr::Weight* ws[2] = {&w, &w};
          float* ys[2] = {y2.data(), y3.data()};
          be->linear_multi(x.data(), n, ws, ys, 2);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t r = 0; r < rows; ++r) {
              double ref, mag;
              ref_dot(x, wf, i, r, cols, &ref, &mag);
              const size_t at = static_cast<size_t>(i * rows + r);
              const double e = std::max({std::fabs(y[at] - (ref + bf[r])) / (mag + std::fabs(bf[r]) + 1e-30),
                                         std::fabs(y2[at] - ref) / (mag + 1e-30), std::fabs(y3[at] - ref) / (mag + 1e-30)});
              worst = std::max(worst, std::isnan(e) ? 1.0 : e);
            }
        }
      }
      report(worst <= 1e-5, "linear / linear_multi odd shapes [" + k + ", " + dt + "]",
             "max rel err " + fmt(worst) + " (tol 1e-05)");
      report(rows_alone, "linear with 2-4 rows: each row bit-identical to it alone [" + k + ", " + dt + "]");
    }
  }
}

// A quantised weight `w` (int8 / int4; `wf` its values in float32, [rows, cols]) on one backend, for 1-9 activation
// rows (the gemv and the gemm paths; x from `next`): linear and linear_multi against a float64 reference (the
// worst relative error goes into *worst), and up to 4 rows, each row's result bit for bit the one it gets alone
// (batched decoding relies on it; *rows_alone becomes false otherwise).
template <class Next>
void quantised_linear_rows(rustasr::Backend& be, const rustasr::Weight& w, const std::vector<float>& wf, Next& next,
                           double* worst, bool* rows_alone) {
  const int64_t rows = w.rows, cols = w.cols;
  const rustasr::Weight none;
  for (int64_t n : {1, 2, 3, 4, 5, 9}) {
    std::vector<float> x(static_cast<size_t>(n * cols)), y(static_cast<size_t>(n * rows));
    std::vector<float> y2(y.size()), y3(y.size());
    for (float& v : x) v = next();
    be.linear(x.data(), n, w, none, y.data());
    if (n <= 4)
      for (int64_t i = 0; i < n; ++i) {
        std::vector<float> one(static_cast<size_t>(rows));
        be.linear(x.data() + i * cols, 1, w, none, one.data());
        if (std::memcmp(one.data(), y.data() + i * rows, static_cast<size_t>(rows) * sizeof(float)) != 0)
          *rows_alone = false;
      }
    const rustasr::Weight* ws[2] = {&w, &w};
    float* ys[2] = {y2.data(), y3.data()};
    be.linear_multi(x.data(), n, ws, ys, 2);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        double ref, mag;
        ref_dot(x, wf, i, r, cols, &ref, &mag);
        const size_t at = static_cast<size_t>(i * rows + r);
        const double e =
            std::max({std::fabs(y[at] - ref), std::fabs(y2[at] - ref), std::fabs(y3[at] - ref)}) / (mag + 1e-30);
        *worst = std::max(*worst, std::isnan(e) ? 1.0 : e);
      }
  }
}

// int4 weights (DType::kI4, util/tensor.h) on every kernel: random nibbles (all 16 values) and scales, blocks of
// 32 columns (the SIMD kernels) and of 16 (the portable fallback), 1-9 activation rows (the gemv and the gemm
// paths), against a float64 reference of sum_c x[c] * q[c] * scale; up to 4 rows, each row's result must be the
// one it gets alone, bit for bit (the 4-weight-row kernel for one activation row against the 1-weight-row kernel
// for several: batched decoding relies on it).
void int4_kernel_checks() {
  uint64_t rng = 0x2545f4914f6cdd1dull;
  auto bits = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
  };
  auto next = [&] { return static_cast<float>(static_cast<double>(bits() >> 11) / 9007199254740992.0 * 2.0 - 1.0); };
  struct Shape {
    int64_t rows, cols, group;
  };
  for (const std::string& k : rustasr::cpu_kernels()) {
    rustasr::BackendOptions bo;
    bo.threads = 2;
    bo.kernel = k;
    std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
    double worst = 0;
    bool rows_alone = true;
    for (const Shape& sh : {Shape{37, 64, 32}, Shape{5, 32, 32}, Shape{130, 256, 32}, Shape{17, 96, 32},
                            Shape{70, 1120, 32}, Shape{29, 2112, 32}, Shape{9, 48, 16}, Shape{21, 80, 16}}) {
      const int64_t rows = sh.rows, cols = sh.cols, group = sh.group, gpr = cols / group, half = group / 2;
      std::vector<uint8_t> data(static_cast<size_t>(rows * cols / 2));
      std::vector<float> scales(static_cast<size_t>(rows * gpr)), wf(static_cast<size_t>(rows * cols));
      for (uint8_t& b : data) b = static_cast<uint8_t>(bits() >> 56);
      for (float& v : scales) v = next() * 0.1f;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t g = c / group, j = c % group;
          const uint8_t b = data[static_cast<size_t>(r * (cols / 2) + g * half + j % half)];
          const int q = (j < half ? (b & 15) : (b >> 4)) - 8;
          wf[static_cast<size_t>(r * cols + c)] = static_cast<float>(q) * scales[static_cast<size_t>(r * gpr + g)];
        }
      rustasr::Weight w;
      w.dtype = rustasr::DType::kI4;
      w.data = data.data();
      w.rows = rows;
      w.cols = cols;
      w.scales = scales.data();
      w.group = group;
      w.name = "test.W4";
      quantised_linear_rows(*be, w, wf, next, &worst, &rows_alone);
    }
    report(worst <= 1e-5, "linear / linear_multi int4 shapes [" + k + "]", "max rel err " + fmt(worst) + " (tol 1e-05)");
    report(rows_alone, "linear int4 with 2-4 rows: each row bit-identical to it alone [" + k + "]");
  }
}

// int8 weights (DType::kI8: one float32 scale per `group` columns) on every kernel: random int8 values and
// scales; the groups int8_group() picks (128 / 64 / 32 / 16 columns) and whole-row groups that are not a
// multiple of 8 or 16 (the kernels' scalar tails); 1-9 activation rows (the gemv and the gemm paths) against a
// float64 reference; up to 4 rows, each row's result must be the one it gets alone, bit for bit (the 4-row
// block for one activation row against 2- and 1-row blocks for several: batched decoding relies on it).
void int8_kernel_checks() {
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  auto bits = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
  };
  auto next = [&] { return static_cast<float>(static_cast<double>(bits() >> 11) / 9007199254740992.0 * 2.0 - 1.0); };
  struct Shape {
    int64_t rows, cols, group;
  };
  for (const std::string& k : rustasr::cpu_kernels()) {
    rustasr::BackendOptions bo;
    bo.threads = 2;
    bo.kernel = k;
    std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
    double worst = 0;
    bool rows_alone = true;
    for (const Shape& sh : {Shape{37, 256, 128}, Shape{5, 128, 128}, Shape{70, 1024, 128}, Shape{13, 3072, 128},
                            Shape{17, 192, 64}, Shape{9, 96, 32}, Shape{21, 48, 16}, Shape{11, 83, 83},
                            Shape{6, 100, 100}, Shape{7, 260, 260}}) {
      const int64_t rows = sh.rows, cols = sh.cols, group = sh.group, gpr = cols / group;
      std::vector<int8_t> data(static_cast<size_t>(rows * cols));
      std::vector<float> scales(static_cast<size_t>(rows * gpr)), wf(static_cast<size_t>(rows * cols));
      for (int8_t& b : data) b = static_cast<int8_t>(static_cast<int>(bits() >> 56) % 255 - 127);
      for (float& v : scales) v = next() * 0.01f;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          wf[static_cast<size_t>(r * cols + c)] =
              static_cast<float>(data[static_cast<size_t>(r * cols + c)]) * scales[static_cast<size_t>(r * gpr + c / group)];
      rustasr::Weight w;
      w.dtype = rustasr::DType::kI8;
      w.data = data.data();
      w.rows = rows;
      w.cols = cols;
      w.scales = scales.data();
      w.group = group;
      w.name = "test.W8";
      quantised_linear_rows(*be, w, wf, next, &worst, &rows_alone);
    }
    report(worst <= 1e-5, "linear / linear_multi int8 shapes [" + k + "]", "max rel err " + fmt(worst) + " (tol 1e-05)");
    report(rows_alone, "linear int8 with 2-4 rows: each row bit-identical to it alone [" + k + "]");
  }
}

// The batched products on other arithmetic and ops: Backend::conv3x3s2_gelu (the direct packed kernel on
// AVX-512, im2col + GEMM elsewhere) against a float64 reference with the exact GELU, on input sizes that are
// odd, smaller than a micro-panel and wider than one, with 1, 3 and 17 input channels (BF16 weights); and
// the opt-in BF16-activation precision ("bf16": activations rounded to BF16) on linear, within the error
// BF16 rounding of x allows (2^-8 of the products' magnitude), while its F32 default stays exact.
void conv_and_precision_checks() {
  uint64_t rng = 0x853c49e6748fea9bull;
  auto next = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return static_cast<float>(static_cast<double>(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  };
  auto bf16_round = [](float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    b &= 0xffff0000u;
    std::memcpy(&f, &b, 4);
    return f;
  };
  for (const std::string& k : rustasr::cpu_kernels()) {
    rustasr::BackendOptions bo;
    bo.threads = 2;
    bo.kernel = k;
    std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
    struct Conv {
      int64_t cin, cout, h, w;
    };
    double worst = 0;
    for (const Conv c : {Conv{1, 40, 128, 100}, Conv{3, 13, 9, 7}, Conv{17, 37, 16, 13}, Conv{1, 5, 2, 1}, Conv{17, 24, 31, 66}}) {
      const int64_t K = c.cin * 9, oh = (c.h + 1) / 2, ow = (c.w + 1) / 2;
      std::vector<float> in(static_cast<size_t>(c.cin * c.h * c.w)), wf(static_cast<size_t>(c.cout * K)),
          bf(static_cast<size_t>(c.cout)), out(static_cast<size_t>(c.cout * oh * ow));
      for (float& v : in) v = next();
      for (float& v : wf) v = bf16_round(next() * 0.5f);
      for (float& v : bf) v = next() * 0.1f;
      std::unique_ptr<uint16_t[]> w16(new uint16_t[wf.size()]);
      for (size_t i = 0; i < wf.size(); ++i) {
        uint32_t b;
        std::memcpy(&b, &wf[i], 4);
        w16[i] = static_cast<uint16_t>(b >> 16);
      }
      rustasr::Weight w, bias;
      w.dtype = rustasr::DType::kBF16;
      w.data = w16.get();
      w.rows = c.cout;
      w.cols = K;
      w.name = "test.conv";
      bias.dtype = rustasr::DType::kF32;
      bias.data = bf.data();
      bias.rows = 1;
      bias.cols = c.cout;
      bias.name = "test.conv_b";
      be->conv3x3s2_gelu(in.data(), c.cin, c.h, c.w, w, bias, out.data());
      for (int64_t co = 0; co < c.cout; ++co)
        for (int64_t oy = 0; oy < oh; ++oy)
          for (int64_t ox = 0; ox < ow; ++ox) {
            double acc = bf[static_cast<size_t>(co)], mag = std::fabs(acc);
            for (int64_t ci = 0; ci < c.cin; ++ci)
              for (int64_t ky = 0; ky < 3; ++ky)
                for (int64_t kx = 0; kx < 3; ++kx) {
                  const int64_t iy = 2 * oy + ky - 1, ix = 2 * ox + kx - 1;
                  if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                  const double p = static_cast<double>(in[static_cast<size_t>((ci * c.h + iy) * c.w + ix)]) *
                                   wf[static_cast<size_t>(co * K + ci * 9 + ky * 3 + kx)];
                  acc += p;
                  mag += std::fabs(p);
                }
            const double ref = 0.5 * acc * (1.0 + std::erf(acc / std::sqrt(2.0)));
            const double e = std::fabs(out[static_cast<size_t>((co * oh + oy) * ow + ox)] - ref) / (mag + 1e-30);
            worst = std::max(worst, std::isnan(e) ? 1.0 : e);
          }
    }
    report(worst <= 1e-5, "conv3x3s2_gelu 5 shapes [" + k + "]", "max err / sum |products| " + fmt(worst) + " (tol 1e-05)");

    // BF16 activations on linear: BF16 and int8-like (F32) weights, shapes across the k blocks.
    rustasr::BackendOptions bb = bo;
    bb.precision = "bf16";
    std::unique_ptr<rustasr::Backend> bbe = rustasr::make_cpu_backend(bb);
    double worst_bf = 0, worst_exact = 0;
    for (const auto& shape : {std::pair<int64_t, int64_t>{37, 83}, {70, 1100}, {130, 257}}) {
      const int64_t rows = shape.first, cols = shape.second;
      std::vector<float> wf(static_cast<size_t>(rows * cols));
      for (float& v : wf) v = bf16_round(next() * 0.5f);
      std::unique_ptr<uint16_t[]> w16(new uint16_t[wf.size()]);
      for (size_t i = 0; i < wf.size(); ++i) {
        uint32_t b;
        std::memcpy(&b, &wf[i], 4);
        w16[i] = static_cast<uint16_t>(b >> 16);
      }
      rustasr::Weight w;
      w.dtype = rustasr::DType::kBF16;
      w.data = w16.get();
      w.rows = rows;
      w.cols = cols;
      w.name = "test.W";
      for (int64_t n : {5, 40, 131}) {
        std::vector<float> x(static_cast<size_t>(n * cols)), y(static_cast<size_t>(n * rows)), ye(y.size());
        for (float& v : x) v = next();
        bbe->linear(x.data(), n, w, rustasr::Weight{}, y.data());
        be->linear(x.data(), n, w, rustasr::Weight{}, ye.data());
        for (int64_t i = 0; i < n; ++i)
          for (int64_t r = 0; r < rows; ++r) {
            double ref, mag;
            ref_dot(x, wf, i, r, cols, &ref, &mag);
            const size_t at = static_cast<size_t>(i * rows + r);
            const double e = std::fabs(y[at] - ref) / (mag + 1e-30), ee = std::fabs(ye[at] - ref) / (mag + 1e-30);
            worst_bf = std::max(worst_bf, std::isnan(e) ? 1.0 : e);
            worst_exact = std::max(worst_exact, std::isnan(ee) ? 1.0 : ee);
          }
      }
    }
    // On the AVX-512 paths of a CPU with AVX512-BF16 the mode must take effect (BF16 rounding shows).
    const bool bf_active = (k == "avx512f" || k == "avx512bf16") &&
                           rustasr::cpu::isa_supported(rustasr::cpu::Isa::kAvx512bf16);
    report(worst_bf <= 1.0 / 256 && worst_exact <= 1e-5 && (!bf_active || worst_bf > 1e-5),
           "linear precision bf16 / f32 [" + k + "]",
           "bf16 max err / sum |products| " + fmt(worst_bf) + " (tol 3.9e-03), f32 " + fmt(worst_exact) + " (tol 1e-05)");
  }
  rustasr::BackendOptions bad;
  bad.precision = "fp8";
  expect_error("precision fp8", ErrorCode::kInvalidArgument, [&] { rustasr::make_cpu_backend(bad); });
}

// Backend::attention for one query row (decode) on every kernel and thread count, against a float64
// reference: cache lengths around the split-by-position threshold (128 rows) and far past it, GQA and
// plain heads, head sizes with and without a split kernel, a row stride wider than the heads, and a
// causal limit shorter than the cache. Buffers are sized exactly, for the sanitizer builds.
void attention_checks() {
  uint64_t rng = 0x2545f4914f6cdd1dull;
  auto next = [&] {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return static_cast<float>(static_cast<double>(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  };
  struct Shape {
    int64_t q_heads, kv_heads, hd;
  };
  for (const std::string& k : rustasr::cpu_kernels())
    for (int threads : {1, 2, 3}) {
      rustasr::BackendOptions bo;
      bo.threads = threads;
      bo.kernel = k;
      std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
      double worst = 0;
      int runs = 0;
      for (const Shape sh : {Shape{16, 8, 128}, Shape{16, 16, 64}, Shape{16, 8, 64}, Shape{8, 4, 32}})
        for (int64_t nk : {1, 127, 128, 129, 300, 1031})
          for (bool short_limit : {false, true}) {
            const int64_t stride = sh.kv_heads * sh.hd + 16;
            const int64_t pos = short_limit ? nk / 2 : nk - 1;  // the query's position: limit = pos + 1
            std::vector<float> q(static_cast<size_t>(sh.q_heads * sh.hd)), out(q.size());
            std::vector<float> kc(static_cast<size_t>(nk * stride)), vc(kc.size());
            for (float& x : q) x = next() * 2.f;
            for (float& x : kc) x = next();
            for (float& x : vc) x = next();
            be->attention(q.data(), 1, pos, kc.data(), vc.data(), nk, stride, sh.q_heads, sh.kv_heads, sh.hd, true,
                          out.data());
            ++runs;
            const int64_t limit = pos + 1, group = sh.q_heads / sh.kv_heads;
            const double scale = 1.0 / std::sqrt(static_cast<double>(sh.hd));
            for (int64_t h = 0; h < sh.q_heads; ++h) {
              const int64_t kh = h / group;
              std::vector<double> p(static_cast<size_t>(limit));
              double mx = -1e300, den = 0;
              for (int64_t j = 0; j < limit; ++j) {
                double d = 0;
                for (int64_t i = 0; i < sh.hd; ++i)
                  d += static_cast<double>(q[static_cast<size_t>(h * sh.hd + i)]) *
                       kc[static_cast<size_t>(j * stride + kh * sh.hd + i)];
                p[static_cast<size_t>(j)] = d * scale;
                mx = std::max(mx, d * scale);
              }
              for (double& x : p) den += (x = std::exp(x - mx));
              for (int64_t i = 0; i < sh.hd; ++i) {
                double ref = 0;
                for (int64_t j = 0; j < limit; ++j)
                  ref += p[static_cast<size_t>(j)] * vc[static_cast<size_t>(j * stride + kh * sh.hd + i)];
                const double e = std::fabs(out[static_cast<size_t>(h * sh.hd + i)] - ref / den);
                worst = std::max(worst, std::isnan(e) ? 1.0 : e);
              }
            }
          }
      report(worst <= 2e-6, "decode attention, " + std::to_string(runs) + " shapes [" + k + ", " +
                                std::to_string(threads) + " thread(s)]",
             "max abs err " + fmt(worst) + " (tol 2e-06)");
      // Several sessions at once (Backend::attention_rows, batched decoding): split and per-head rows mixed,
      // each row's output bit-identical to attention() on it alone.
      bool rows_alone = true;
      for (const Shape sh : {Shape{16, 8, 128}, Shape{16, 16, 64}, Shape{8, 4, 32}}) {
        const int64_t stride = sh.kv_heads * sh.hd;
        const std::vector<int64_t> lens = {300, 50, 1031, 129};
        std::vector<std::vector<float>> qs, ks, vs, outs;
        std::vector<rustasr::Backend::AttentionRow> rows;
        for (int64_t nk : lens) {
          qs.emplace_back(static_cast<size_t>(sh.q_heads * sh.hd));
          ks.emplace_back(static_cast<size_t>(nk * stride));
          vs.emplace_back(static_cast<size_t>(nk * stride));
          outs.emplace_back(static_cast<size_t>(sh.q_heads * sh.hd));
          for (float& x : qs.back()) x = next() * 2.f;
          for (float& x : ks.back()) x = next();
          for (float& x : vs.back()) x = next();
        }
        for (size_t i = 0; i < lens.size(); ++i)
          rows.push_back({qs[i].data(), lens[i] - 1, ks[i].data(), vs[i].data(), outs[i].data()});
        be->attention_rows(rows.data(), static_cast<int>(rows.size()), stride, sh.q_heads, sh.kv_heads, sh.hd);
        for (size_t i = 0; i < lens.size(); ++i) {
          std::vector<float> one(outs[i].size());
          be->attention(qs[i].data(), 1, lens[i] - 1, ks[i].data(), vs[i].data(), lens[i], stride, sh.q_heads,
                        sh.kv_heads, sh.hd, true, one.data());
          if (std::memcmp(one.data(), outs[i].data(), one.size() * sizeof(float)) != 0) rows_alone = false;
        }
      }
      report(rows_alone, "decode attention of 4 sessions in one call: each row bit-identical to it alone [" + k + ", " +
                             std::to_string(threads) + " thread(s)]");
    }
  // The per-row attention kernels (attend_f32: scores, softmax and the weighted sum in registers) against the
  // loop they replace, per key and head dot_f32 then axpy_f32 from 0, on the same ISA: bit-identical (so
  // prefill rows, decode rows and ISAs without a kernel agree with it), over head sizes with and without an
  // 8- or 16-lane tail and a chunked output, groups 1-4 and 3 (one head at a time), key counts around the
  // blocks of 4 / G keys.
  for (const std::string& k : rustasr::cpu_kernels()) {
    const rustasr::cpu::Isa isa = rustasr::cpu::parse_kernel(k);
    int runs = 0, kernel_runs = 0;
    bool same = true;
    for (int64_t hd : {8, 24, 64, 80, 128})
      for (int64_t group : {1, 2, 3, 4})
        for (int64_t limit : {1, 2, 3, 5, 8, 37, 130}) {
          const int64_t stride = 4 * hd + 8;
          std::vector<float> q(static_cast<size_t>(group * hd)), kc(static_cast<size_t>(limit * stride)),
              vc(kc.size()), out(q.size()), ref(q.size());
          std::vector<float> sc(static_cast<size_t>(group * limit));
          for (float& x : q) x = next() * 2.f;
          for (float& x : kc) x = next();
          for (float& x : vc) x = next();
          const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
          ++runs;
          if (!rustasr::cpu::attend_f32(isa, q.data(), kc.data(), vc.data(), limit, stride, hd, group, scale,
                                        sc.data(), out.data()))
            continue;
          ++kernel_runs;
          for (int64_t g = 0; g < group; ++g) {
            std::vector<float> s(static_cast<size_t>(limit));
            float mx = -INFINITY;
            for (int64_t j = 0; j < limit; ++j) {
              s[static_cast<size_t>(j)] =
                  rustasr::cpu::dot_f32(isa, q.data() + g * hd, kc.data() + j * stride, hd) * scale;
              mx = std::max(mx, s[static_cast<size_t>(j)]);
            }
            double sum = 0;
            for (float& x : s) sum += (x = std::exp(x - mx));
            float* o = ref.data() + g * hd;
            std::fill(o, o + hd, 0.f);
            for (int64_t j = 0; j < limit; ++j)
              rustasr::cpu::axpy_f32(isa, s[static_cast<size_t>(j)], vc.data() + j * stride, o, hd);
            const float inv = static_cast<float>(1.0 / sum);
            for (int64_t i = 0; i < hd; ++i) o[i] *= inv;
          }
          if (std::memcmp(out.data(), ref.data(), out.size() * sizeof(float)) != 0) same = false;
        }
    report(same, "attention kernel bit-identical to the dot / axpy loop [" + k + "]",
           std::to_string(kernel_runs) + " of " + std::to_string(runs) + " shapes have a kernel on this path");
  }
}

// Backend::gelu (the exact, erf form) on every kernel against float64, over -30..30, tiny values and the
// lengths that leave a vector tail; NaN stays NaN. The AVX-512 paths use a vector erf (within 1.5e-7).
void gelu_checks() {
  std::vector<float> xs;
  for (int i = -3000; i <= 3000; ++i) xs.push_back(static_cast<float>(i) * 0.01f);
  for (float v : {1e-30f, -1e-30f, 1e-7f, -1e-7f, 0.f, -0.f, 5.5f, -5.5f}) xs.push_back(v);
  xs.push_back(std::numeric_limits<float>::quiet_NaN());  // last: 6009 values, not a multiple of 16
  for (const std::string& k : rustasr::cpu_kernels()) {
    rustasr::BackendOptions bo;
    bo.threads = 2;
    bo.kernel = k;
    std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
    std::vector<float> y = xs;
    be->gelu(y.data(), static_cast<int64_t>(y.size()));
    double worst = 0;
    for (size_t i = 0; i + 1 < xs.size(); ++i) {
      const double x = xs[i], ref = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
      const double e = std::fabs(y[i] - ref) / std::max(1.0, std::fabs(x));
      worst = std::max(worst, std::isnan(e) ? 1.0 : e);
    }
    report(worst <= 2.5e-7 && std::isnan(y.back()), "gelu -30..30 [" + k + "]",
           "max err / max(1, |x|) " + fmt(worst) + " (tol 2.5e-07), NaN -> " + fmt(y.back()));
    // silu(g) * u over the same range (u = 1.5), and in place (out aliasing gate, as the decoder runs it).
    std::vector<float> up(xs.size(), 1.5f), g = xs;
    be->silu_mul(g.data(), up.data(), static_cast<int64_t>(g.size()), g.data());
    double worst_s = 0;
    for (size_t i = 0; i + 1 < xs.size(); ++i) {
      const double x = xs[i], ref = x / (1.0 + std::exp(-x)) * 1.5;
      const double e = std::fabs(g[i] - ref) / std::max(1.0, std::fabs(x));
      worst_s = std::max(worst_s, std::isnan(e) ? 1.0 : e);
    }
    report(worst_s <= 2.5e-7 && std::isnan(g.back()), "silu_mul -30..30 [" + k + "]",
           "max err / max(1, |x|) " + fmt(worst_s) + " (tol 2.5e-07), NaN -> " + fmt(g.back()));
  }
}

// DeviceBuffer::grow_keep through Backend::realloc_keep (the KV cache's growth): the kept elements survive
// every growth, from empty, from a block of alloc, and across several moves of a grown block (the CPU
// backend's mremap path on Linux), with a second buffer grown in between so that a range cannot simply
// extend in place; then both are freed (a leak or a bad munmap shows under ASan and valgrind).
void buffer_growth_checks() {
  rustasr::BackendOptions bo;
  bo.threads = 1;
  std::unique_ptr<rustasr::Backend> be = rustasr::make_cpu_backend(bo);
  auto value = [](int64_t i, int tag) { return static_cast<float>((i * 7919 + tag * 131) % 100003); };
  auto intact = [&](const float* p, int64_t n, int tag) {
    for (int64_t i = 0; i < n; i += 997)
      if (p[i] != value(i, tag)) return false;
    return n == 0 || p[n - 1] == value(n - 1, tag);
  };
  auto fill = [&](float* p, int64_t from, int64_t to, int tag) {
    for (int64_t i = from; i < to; ++i) p[i] = value(i, tag);
  };
  for (const bool from_alloc : {false, true}) {
    rustasr::DeviceBuffer a(be.get()), b(be.get());
    int64_t n = 1000;
    float* pa = from_alloc ? a.get(n) : a.grow_keep(n);
    fill(pa, 0, n, 1);
    float* pb = b.grow_keep(n);
    fill(pb, 0, n, 2);
    bool ok = true;
    std::string why;
    for (const int64_t next : {int64_t(3000), int64_t(300000), int64_t(1) << 21, int64_t(3) << 21}) {
      pa = a.grow_keep(next);
      if (!intact(pa, n, 1) && ok) ok = false, why = "a lost its elements growing to " + std::to_string(next);
      fill(pa, n, next, 1);
      pb = b.grow_keep(next);
      if (!intact(pb, n, 2) && ok) ok = false, why = "b lost its elements growing to " + std::to_string(next);
      fill(pb, n, next, 2);
      n = next;
    }
    if ((a.grow_keep(n / 2) != pa || !intact(pa, n, 1)) && ok) ok = false, why = "a smaller size moved or changed a";
    report(ok && intact(pa, n, 1) && intact(pb, n, 2),
           std::string("DeviceBuffer::grow_keep keeps every element over 4 growths (1000 .. 6.3M floats, ") +
               (from_alloc ? "first block from alloc" : "from empty") + ", two buffers interleaved)",
           why);
  }
}

// io/large_pages: a mapping lands on a 2 MiB boundary with the file's bytes intact; a file written just now
// in 4 KiB pieces (its page cache in 4 KiB folios) is found so and, where the kernel can cache it in 2 MiB
// folios, dropped ("reread"): mapped again and touched, it is then found "large", bytes still intact. A file
// under 4 MiB is left alone ("off"). Kernels without large folios or PAGEMAP_SCAN report so (noted).
void large_page_checks() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("rustasr-lp-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "w.bin").string();
  const size_t size = (size_t(12) << 20) + 12345;
  auto byte_at = [](size_t i) { return static_cast<unsigned char>((i * 2654435761u) >> 13); };
  {
    std::vector<unsigned char> page(4096);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    for (size_t off = 0; f && off < size; off += page.size()) {
      const size_t n = std::min(page.size(), size - off);
      for (size_t i = 0; i < n; ++i) page[i] = byte_at(off + i);
      std::fwrite(page.data(), 1, n, f);
      std::fflush(f);  // 4 KiB writes: small folios
    }
    if (f) std::fclose(f);
  }
  auto intact = [&](const void* m) {
    const unsigned char* p = static_cast<const unsigned char*>(m);
    for (size_t i = 0; i < size; i += 4093)
      if (p[i] != byte_at(i)) return false;
    return p[size - 1] == byte_at(size - 1);
  };
  auto mapped = [&](auto&& body) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    void* m = fd >= 0 ? rustasr::map_file_readonly(fd, size) : MAP_FAILED;
    if (fd >= 0) ::close(fd);
    if (m == MAP_FAILED) {
      report(false, "map_file_readonly", std::strerror(errno));
      return;
    }
    body(m);
    ::munmap(m, size);
  };
  rustasr::LargePageReport first;
  mapped([&](void* m) {
    report(reinterpret_cast<uintptr_t>(m) % (uintptr_t(2) << 20) == 0 && intact(m),
           "map_file_readonly: 12 MiB file on a 2 MiB boundary, bytes intact");
    first = rustasr::prepare_large_pages(m, size, path);
    report(intact(m), "prepare_large_pages: bytes intact after it (" + first.state + ")");
  });
  if (first.state == "reread") {
    rustasr::LargePageReport again;
    mapped([&](void* m) {
      const bool ok = intact(m);  // reads the file back in (2 MiB folios)
      again = rustasr::prepare_large_pages(m, size, path);
      report(ok && again.state == "large" && again.sampled > 0 && again.large == again.sampled,
             "prepare_large_pages: a file just written is reread, then found in 2 MiB pages",
             "first " + first.state + " (" + std::to_string(first.large) + "/" + std::to_string(first.sampled) +
                 " large), then " + again.state + " (" + std::to_string(again.large) + "/" +
                 std::to_string(again.sampled) + ")");
    });
  } else {
    report(first.state == "large" || first.state == "unsupported" || first.state == "unknown",
           "prepare_large_pages on a file just written: " + first.state,
           "this kernel did not drop and reread it (large folios or PAGEMAP_SCAN missing, or the write made "
           "2 MiB folios already)");
  }
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    void* m = fd >= 0 ? rustasr::map_file_readonly(fd, size_t(3) << 20) : MAP_FAILED;
    if (fd >= 0) ::close(fd);
    report(m != MAP_FAILED && rustasr::prepare_large_pages(m, size_t(3) << 20, path).state == "off",
           "prepare_large_pages: a 3 MiB mapping is left alone (off)");
    if (m != MAP_FAILED) ::munmap(m, size_t(3) << 20);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// The benchmark probes (backend/cpu/probe.cpp) are engine code too: run them small, for the sanitizers.
void probe_checks() {
  namespace cpu = rustasr::cpu;
  const cpu::BandwidthProbe bw = cpu::probe_read_bandwidth(2, 1 << 20, 2);
  report(bw.seconds.size() == 2 && bw.bytes == (1 << 20) && !bw.isa.empty(), "probe_read_bandwidth 1 MiB");
  for (const std::string& k : rustasr::cpu_kernels())
    for (const char* impl : {"auto", "own", "blas", "blas-threaded"}) {
      try {
        const cpu::GemmProbe g = cpu::probe_gemm(2, k, impl, 9, 64, 96, 1);
        report(g.seconds.size() == 1 && g.flops == 2.0 * 9 * 64 * 96, std::string("probe_gemm ") + impl + " " + k);
      } catch (const std::exception& e) {
        report(false, std::string("probe_gemm ") + impl + " " + k, e.what());
      }
    }
  expect_error("probe_gemm unknown impl", ErrorCode::kInvalidArgument,
               [] { cpu::probe_gemm(1, "auto", "bogus", 1, 1, 1, 1); });
  expect_error("probe_read_bandwidth 100 bytes", ErrorCode::kInvalidArgument,
               [] { cpu::probe_read_bandwidth(1, 100, 1); });
  report(cpu::probe_blas_info().rfind("openblas", 0) == 0, "probe_blas_info", cpu::probe_blas_info());
  for (const std::string& kind : cpu::probe_peak_kinds()) {
    const cpu::PeakProbe p = cpu::probe_compute_peak(2, kind, 0.01, 2);
    report(p.seconds.size() == 2 && p.flops > 0 && p.threads == 2 && !p.isa.empty() && p.seconds[0] > 0,
           "probe_compute_peak " + kind, p.isa + ", " + fmt(p.flops / p.seconds[0] / 1e9) + " GFLOP/s");
  }
  expect_error("probe_compute_peak unknown kind", ErrorCode::kInvalidArgument,
               [] { cpu::probe_compute_peak(1, "fp64", 0.01, 1); });
}

struct Options {
  std::string root;
  bool quick = false;
  bool errors = true;
  bool int8 = true;
  int threads = 0;
  std::string device;
  std::vector<std::string> cases, kernels;
};

int usage() {
  std::fprintf(stderr,
               "usage: golden_main [GOLDEN_DIR] [--quick] [--case NAME]... [--kernel NAME|all]... [--threads N] "
               "[--no-errors] [--no-int8] [--serial] [--device cpu|cuda|metal]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // int8 loads write their on-disk cache here, not into the user's cache: a run never reuses a cache
  // file written by another run (or another architecture: the qemu arm64 run shares $HOME with x86).
  static TempDir int8_cache_dir;
  if (!std::getenv("RUSTASR_CACHE_DIR")) ::setenv("RUSTASR_CACHE_DIR", int8_cache_dir.path.c_str(), 1);
  // lowMemory frees encoder buffers only past 24 MiB: always here, so that path runs on every case.
  ::setenv("RUSTASR_ENCODER_SCRATCH_KEEP_BYTES", "0", 1);
  // Batched decoding: sessions in lock-step join a batch within 100 ms rather than a tenth of a step (at most
  // 2 ms), so that the sharing check holds in slow builds too (coverage -O0, sanitizers, qemu), where the
  // bookkeeping between two steps (an argmax over the vocabulary) can take longer than 2 ms.
  if (!std::getenv("RUSTASR_BATCH_WAIT_US")) ::setenv("RUSTASR_BATCH_WAIT_US", "100000", 1);
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--quick") o.quick = true;
      else if (a == "--no-errors") o.errors = false;
      else if (a == "--no-int8") o.int8 = false;
      else if (a == "--serial") g_serial = true;
      else if (a == "--case") o.cases.push_back(value());
      else if (a == "--kernel") o.kernels.push_back(value());
      else if (a == "--threads") o.threads = std::stoi(value());
      else if (a == "--device") o.device = value();
      else if (a == "-h" || a == "--help") return usage();
      else if (!a.empty() && a[0] == '-') return usage();
      else o.root = a;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return usage();
    }
  }
  if (o.device.empty()) {
    const char* env = std::getenv("RUSTASR_TEST_DEVICE");
    o.device = env && *env ? env : "cpu";
  }
  if (o.root.empty()) {
    const char* env = std::getenv("RUSTASR_GOLDEN_DIR");
    o.root = env && *env ? env : RUSTASR_DEFAULT_GOLDEN;
  }

  try {
    const JsonValue index = rustasr::parse_json(read_file(o.root + "/cases/index.json"));
    std::vector<Case> cases;
    for (const JsonValue& c : index.get("cases")->elements()) {
      Case k;
      k.name = c.get("case")->as_string();
      k.model_dir = c.get("model_dir")->as_string();
      k.audio = c.get("audio")->as_string();
      k.mel_frames = c.get("mel_frames")->as_int64();
      if (!o.cases.empty() && std::find(o.cases.begin(), o.cases.end(), k.name) == o.cases.end()) continue;
      cases.push_back(k);
    }
    if (o.quick && o.cases.empty()) {
      std::stable_sort(cases.begin(), cases.end(),
                       [](const Case& a, const Case& b) { return a.mel_frames < b.mel_frames; });
      if (cases.size() > 2) cases.resize(2);
    }
    // Forced-aligner cases (aligner/index.json, when the golden set has them): the same selection rules.
    std::vector<AlignerCase> acases;
    JsonValue atol;
    if (fs::exists(o.root + "/aligner/index.json")) {
      const JsonValue aindex = rustasr::parse_json(read_file(o.root + "/aligner/index.json"));
      if (const JsonValue* t = aindex.get("tolerances")) atol = *t;
      for (const JsonValue& c : aindex.get("cases")->elements()) {
        AlignerCase k;
        k.name = c.get("case")->as_string();
        k.model_dir = c.get("model_dir")->as_string();
        k.audio = c.get("audio")->as_string();
        k.prompt_len = c.get("prompt_len")->as_int64();
        if (!o.cases.empty() && std::find(o.cases.begin(), o.cases.end(), k.name) == o.cases.end()) continue;
        acases.push_back(k);
      }
      if (o.quick && o.cases.empty()) {
        std::stable_sort(acases.begin(), acases.end(),
                         [](const AlignerCase& a, const AlignerCase& b) { return a.prompt_len < b.prompt_len; });
        if (acases.size() > 1) acases.resize(1);
      }
    }
    if (cases.empty() && acases.empty()) throw std::runtime_error("no golden cases selected under " + o.root);

    std::vector<std::string> kernels;
    for (const std::string& k : o.kernels) {
      if (k == "all") {
        for (const std::string& c : rustasr::cpu_kernels()) kernels.push_back(c);
      } else {
        kernels.push_back(k);
      }
    }
    if (kernels.empty()) {
      if (o.quick || o.device != "cpu") kernels.push_back("auto");
      else kernels = rustasr::cpu_kernels();
    }
    std::printf("golden root %s: %zu case(s), device %s, kernels:", o.root.c_str(), cases.size(), o.device.c_str());
    for (const std::string& k : kernels) std::printf(" %s", k.c_str());
    std::printf("\n");

    std::map<std::string, CaseData> data;
    for (const Case& c : cases) data.emplace(c.name, load_case(o.root, c));

    std::map<std::string, AlignerData> adata;
    for (const AlignerCase& c : acases) adata.emplace(c.name, load_aligner_case(o.root, c, atol));
    std::printf("aligner cases: %zu\n", acases.size());

    for (const std::string& k : kernels) {
      std::map<std::string, std::shared_ptr<const rustasr::Model>> models;  // by model_dir
      for (const Case& c : cases) {
        try {
          auto& m = models[c.model_dir];
          if (!m) {
            rustasr::ModelParams p;
            p.threads = o.threads;
            p.kernel = k;
            p.device = o.device;
            m = rustasr::load_model(o.root + "/" + c.model_dir, p);
            report(rustasr::model_info(*m).kernel == k || k == "auto",
                   c.model_dir + " loads with kernel " + k, "in use: " + rustasr::model_info(*m).kernel);
          }
          run_case(m, c, data.at(c.name), k);
        } catch (const std::exception& e) {
          report(false, c.name + " [" + k + "]", std::string("exception: ") + e.what());
        }
        if (!o.int8) continue;
        try {
          auto& m = models[c.model_dir + "#int8"];
          if (!m) {
            rustasr::ModelParams p;
            p.threads = o.threads;
            p.kernel = k;
            p.device = o.device;
            p.quant = "int8";
            m = rustasr::load_model(o.root + "/" + c.model_dir, p);
            report(rustasr::model_info(*m).quant == "int8", c.model_dir + " loads as int8 with kernel " + k);
          }
          run_case_int8(m, c, data.at(c.name), k);
        } catch (const std::exception& e) {
          report(false, c.name + " [" + k + ", int8]", std::string("exception: ") + e.what());
        }
        try {
          auto& m = models[c.model_dir + "#int4"];
          if (!m) {
            rustasr::ModelParams p;
            p.threads = o.threads;
            p.kernel = k;
            p.device = o.device;
            p.quant = "int4";
            m = rustasr::load_model(o.root + "/" + c.model_dir, p);
            report(rustasr::model_info(*m).quant == "int4", c.model_dir + " loads as int4 with kernel " + k);
          }
          run_case_quant(m, c, data.at(c.name), k, "int4", kInt4LogitsTol, false);
        } catch (const std::exception& e) {
          report(false, c.name + " [" + k + ", int4]", std::string("exception: ") + e.what());
        }
      }
      // Batched decoding on this kernel: the cases of each model (and its int8 form) decode together.
      for (const auto& [key, m] : models) {
        if (!m) continue;
        const std::string dir = key.substr(0, key.find('#'));
        std::vector<std::pair<std::string, const CaseData*>> cs;
        for (const Case& c : cases)
          if (c.model_dir == dir) cs.emplace_back(c.name, &data.at(c.name));
        try {
          const size_t hash = key.find('#');
          batch_checks(m, cs, dir + " [" + k + (hash == std::string::npos ? "] " : ", " + key.substr(hash + 1) + "] "));
        } catch (const std::exception& e) {
          report(false, dir + " [" + k + "] batched decoding", std::string("exception: ") + e.what());
        }
      }
      for (const AlignerCase& c : acases) {
        for (const bool int8 : {false, true}) {
          if (int8 && !o.int8) continue;
          const std::string tag = c.name + " [" + k + (int8 ? ", int8]" : "]");
          try {
            auto& m = models[c.model_dir + (int8 ? "#int8" : "")];
            if (!m) {
              rustasr::ModelParams p;
              p.threads = o.threads;
              p.kernel = k;
              p.device = o.device;
              if (int8) p.quant = "int8";
              m = rustasr::load_model(o.root + "/" + c.model_dir, p);
              report(rustasr::model_info(*m).kernel == k || k == "auto", c.model_dir + " loads with kernel " + k + (int8 ? " (int8)" : ""));
            }
            if (int8) run_aligner_case_int8(m, c, adata.at(c.name), k, kInt8AlignerTol);
            else run_aligner_case(m, c, adata.at(c.name), k);
          } catch (const std::exception& e) {
            report(false, tag, std::string("exception: ") + e.what());
          }
        }
      }
    }

    if (o.device == "cuda" || o.device == "metal") {
      try {
        device_op_checks(o.device, report);
      } catch (const std::exception& e) {
        report(false, o.device + " op checks", std::string("exception: ") + e.what());
      }
    }

    if (o.errors) {
      if (!cases.empty()) {
        const Case& c = cases.front();
        try {
          error_checks(o.root + "/" + c.model_dir, data.at(c.name), o.quick ? "auto" : kernels.front(), o.threads);
        } catch (const std::exception& e) {
          report(false, "broken-input checks", std::string("exception: ") + e.what());
        }
        if (!acases.empty()) {
          const AlignerCase& ac = acases.front();
          try {
            aligner_error_checks(o.root + "/" + ac.model_dir, o.root + "/" + c.model_dir, adata.at(ac.name));
          } catch (const std::exception& e) {
            report(false, "aligner broken-input checks", std::string("exception: ") + e.what());
          }
        }
      }
      // The model-free checks: each reports its own results; an exception fails it by name.
      const std::pair<const char*, void (*)()> standalone[] = {
          {"kernel checks", kernel_checks},
          {"int4 kernel checks", int4_kernel_checks},
          {"int8 kernel checks", int8_kernel_checks},
          {"conv and precision checks", conv_and_precision_checks},
          {"attention checks", attention_checks},
          {"gelu checks", gelu_checks},
          {"probe checks", probe_checks},
          {"large page checks", large_page_checks},
          {"buffer growth checks", buffer_growth_checks},
      };
      for (const auto& [name, run] : standalone) {
        try {
          run();
        } catch (const std::exception& e) {
          report(false, name, std::string("exception: ") + e.what());
        }
      }
    }
  } catch (const std::exception& e) {
    report(false, "setup", e.what());
  }

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
