// Qwen3-ForcedAligner: the one-pass timestamp classification (see rustasr/engine.h, Aligner).
//
// The aligner shares the ASR model's architecture and loading (config kind kForcedAligner, lm_head
// [classify_num, hidden]); what differs is the run: the whole input goes through the causal decoder once,
// without a KV cache to keep, and the final RMSNorm and the head are applied only at the <timestamp>
// rows. The decoder layers are written out here (the same ops in the same order as Session's decoder)
// rather than shared with Session, whose decode path keeps its own cache and buffers: this pass keeps only
// one layer's keys and values at a time.
#include <algorithm>
#include <atomic>
#include <string>

#include "model.h"

namespace rustasr {

namespace {

// Counts the aligner as a busy session of its model for one call (stage residency in other sessions of a
// lowMemory model leaves the weights alone meanwhile).
class BusyCall {
 public:
  explicit BusyCall(const Model& m) : n_(m.busy_sessions()) { n_.fetch_add(1); }
  ~BusyCall() { n_.fetch_sub(1); }
  BusyCall(const BusyCall&) = delete;
  BusyCall& operator=(const BusyCall&) = delete;

 private:
  std::atomic<int>& n_;
};

}  // namespace

// Activations of one pass, in backend memory; reused (grown, never shrunk) across calls of one Aligner.
struct Aligner::State {
  DeviceBuffer h, x, q, k, v, att, gate, up, slots, logits;
  explicit State(Backend* be) {
    for (DeviceBuffer* b : {&h, &x, &q, &k, &v, &att, &gate, &up, &slots, &logits}) b->bind(be);
  }
};

Aligner::Aligner(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  if (!model_) throw Error(ErrorCode::kInvalidArgument, "Aligner needs a model");
  if (model_->config().kind != ModelKind::kForcedAligner)
    throw Error(ErrorCode::kInvalidArgument,
                "not a forced-aligner checkpoint (thinker_config.model_type has no \"forced_aligner\")");
  session_.reset(new Session(model_));
  state_.reset(new State(&model_->backend()));
}

Aligner::~Aligner() = default;

AlignerOutput Aligner::classify(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio,
                                bool keep_logits, bool keep_hidden) {
  const Model& m = *model_;
  const ModelConfig& cfg = m.config();
  const TextConfig& t = cfg.text;
  const int64_t hidden = t.hidden_size, heads = t.num_attention_heads, kv_heads = t.num_key_value_heads;
  const int64_t hd = t.head_dim, inter = t.intermediate_size, q_dim = heads * hd, kv_dim = kv_heads * hd;
  const int64_t classes = cfg.aligner.classify_num;
  const float eps = static_cast<float>(t.rms_norm_eps), theta = static_cast<float>(t.rope_theta);
  if (n <= 0) throw Error(ErrorCode::kInvalidArgument, "align: empty input");
  AlignerOutput out;
  int64_t pads = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= t.vocab_size)
      throw Error(ErrorCode::kInvalidArgument, "align: token id " + std::to_string(ids[i]) + " out of range");
    if (ids[i] == cfg.audio_token_id) ++pads;
    if (ids[i] == cfg.aligner.timestamp_token_id) out.positions.push_back(i);
  }
  if (pads != n_audio)
    throw Error(ErrorCode::kInvalidArgument, "align: the input has " + std::to_string(pads) +
                                                 " audio pad tokens but " + std::to_string(n_audio) +
                                                 " audio embeddings were given");
  if (out.positions.empty())
    throw Error(ErrorCode::kInvalidArgument, "align: the input has no <timestamp> token (id " +
                                                 std::to_string(cfg.aligner.timestamp_token_id) + ")");
  out.n_audio_tokens = static_cast<int>(n_audio);
  BusyCall busy(m);
  Backend& be = m.backend();
  const ModelWeights& w = m.weights();
  State& S = *state_;

  // Embeddings, with the <|audio_pad|> rows replaced by the audio embeddings (one upload per run of pads).
  float* h = S.h.get(n * hidden);
  be.embed(w.embed_tokens, ids, n, h);
  for (int64_t i = 0, a = 0; i < n;) {
    if (ids[i] != cfg.audio_token_id) {
      ++i;
      continue;
    }
    int64_t run = 1;
    while (i + run < n && ids[i + run] == cfg.audio_token_id) ++run;
    be.upload(h + i * hidden, audio_embeds + a * hidden, run * hidden);
    a += run;
    i += run;
  }

  // Decoder layers over all n rows, positions 0..n-1, causal attention.
  float* x = S.x.get(n * hidden);
  float* q = S.q.get(n * q_dim);
  float* k = S.k.get(n * kv_dim);
  float* v = S.v.get(n * kv_dim);
  float* att = S.att.get(n * q_dim);
  float* gate = S.gate.get(n * inter);
  float* up = S.up.get(n * inter);
  const Weight none{};
  for (const DecoderLayerWeights& L : w.dec_layers) {
    be.rms_norm(h, n, hidden, L.in_norm, eps, x);
    {
      const Weight* ws[3] = {&L.q_w, &L.k_w, &L.v_w};
      float* ys[3] = {q, k, v};
      be.linear_multi(x, n, ws, ys, 3);
    }
    be.rms_norm(q, n * heads, hd, L.q_norm, eps, q);
    be.rms_norm(k, n * kv_heads, hd, L.k_norm, eps, k);
    be.rope(q, n, heads, hd, 0, theta);
    be.rope(k, n, kv_heads, hd, 0, theta);
    be.attention(q, n, 0, k, v, n, kv_dim, heads, kv_heads, hd, true, att);
    be.linear(att, n, L.o_w, none, x);
    be.add(h, x, n * hidden);
    be.rms_norm(h, n, hidden, L.post_norm, eps, x);
    {
      const Weight* ws[2] = {&L.gate_w, &L.up_w};
      float* ys[2] = {gate, up};
      be.linear_multi(x, n, ws, ys, 2);
    }
    be.silu_mul(gate, up, n * inter, gate);
    be.linear(gate, n, L.down_w, none, x);
    be.add(h, x, n * hidden);
  }

  // Final RMSNorm at the slot rows only (one call per run of consecutive slots: they come in pairs), then
  // the classifier over those rows.
  const int64_t n_slots = static_cast<int64_t>(out.positions.size());
  float* slots = S.slots.get(n_slots * hidden);
  for (int64_t s = 0; s < n_slots;) {
    int64_t run = 1;
    while (s + run < n_slots && out.positions[static_cast<size_t>(s + run)] == out.positions[static_cast<size_t>(s)] + run)
      ++run;
    be.rms_norm(h + out.positions[static_cast<size_t>(s)] * hidden, run, hidden, w.final_norm, eps, slots + s * hidden);
    s += run;
  }
  float* logits = S.logits.get(n_slots * classes);
  be.linear(slots, n_slots, w.lm_head, none, logits);
  std::vector<float> host(static_cast<size_t>(n_slots * classes));
  be.download(host.data(), logits, n_slots * classes);
  out.classes.resize(static_cast<size_t>(n_slots));
  for (int64_t s = 0; s < n_slots; ++s) out.classes[static_cast<size_t>(s)] = argmax(host.data() + s * classes, classes);
  if (keep_logits) out.logits = std::move(host);
  if (keep_hidden) {
    out.hidden.resize(static_cast<size_t>(n_slots * hidden));
    be.download(out.hidden.data(), slots, n_slots * hidden);
  }
  return out;
}

AlignerOutput Aligner::align(const float* samples, size_t n, const int32_t* text_ids, int64_t n_text,
                             bool keep_logits) {
  const ModelConfig& cfg = model_->config();
  if (n_text < 0 || (n_text > 0 && !text_ids)) throw Error(ErrorCode::kInvalidArgument, "align: bad text ids");
  for (int64_t i = 0; i < n_text; ++i)
    if (text_ids[i] == cfg.audio_token_id)
      throw Error(ErrorCode::kInvalidArgument, "align: the text ids hold an audio pad token");
  const std::vector<float> mel = session_->mel(samples, n);
  const int64_t frames = static_cast<int64_t>(mel.size() / static_cast<size_t>(cfg.audio.num_mel_bins));
  const EncoderOutputs enc = session_->encode(mel.data(), frames, false);
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(enc.n_tokens + 2 + n_text));
  ids.push_back(cfg.audio_start_token_id);
  ids.insert(ids.end(), static_cast<size_t>(enc.n_tokens), cfg.audio_token_id);
  ids.push_back(cfg.audio_end_token_id);
  ids.insert(ids.end(), text_ids, text_ids + n_text);
  return classify(ids.data(), static_cast<int64_t>(ids.size()), enc.embeds.data(), enc.n_tokens, keep_logits, false);
}

}  // namespace rustasr
