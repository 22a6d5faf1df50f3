// The Qwen3-ASR forward pass: AuT audio encoder and Qwen3 decoder with a KV cache, written once against
// the Backend op interface. The numbered comments refer to the golden README's "Exact pipeline".
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <thread>

#include "../io/config.h"
#include "../io/preprocessor.h"
#include "../util/json.h"

namespace rustasr {

namespace {

Weight none() { return Weight{}; }

// Sinusoidal position embedding of the audio encoder (per chunk, positions restart at 0), computed in
// float32 like the official SinusoidsPositionEmbedding: inv[i] = exp(-i * ln(10000) / (d/2 - 1)),
// pe[p] = [sin(p * inv), cos(p * inv)]. Rows 0..n-1 into out ([n, d], host memory).
void sinusoid_table(float* out, int64_t n, int64_t d) {
  const int64_t half = d / 2;
  const float inc = static_cast<float>(std::log(10000.0) / static_cast<double>(half - 1));
  for (int64_t t = 0; t < n; ++t) {
    const float p = static_cast<float>(t);
    float* row = out + t * d;
    for (int64_t i = 0; i < half; ++i) {
      const float inv = std::exp(-inc * static_cast<float>(i));
      const float a = p * inv;
      row[i] = std::sin(a);
      row[half + i] = std::cos(a);
    }
  }
}

// Counts a session as busy on its model for the duration of one call (encode, prefill, step).
class BusyScope {
 public:
  explicit BusyScope(const Model& m) : n_(m.busy_sessions()), alone_(n_.fetch_add(1) == 0) {}
  ~BusyScope() { n_.fetch_sub(1); }
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;
  bool alone() const { return alone_; }       // no other session was busy when this call began
  bool still_alone() const { return n_.load() == 1; }

 private:
  std::atomic<int>& n_;
  bool alone_;
};

}  // namespace

Model::Model(ModelConfig config, ModelWeights weights, std::unique_ptr<Backend> backend, MelParams mel_params)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(std::move(backend)),
      mel_(mel_params) {}

int64_t Model::tokens_per_chunk() const {
  return conv_out_len(conv_out_len(conv_out_len(chunk_frames())));
}

int64_t Model::attention_window() const {
  // window_aftercnn = tokens of a full chunk * (n_window_infer // (2 * n_window)).
  return tokens_per_chunk() * (config_.audio.n_window_infer / chunk_frames());
}

int64_t Model::audio_tokens(int64_t frames) const {
  const int64_t full = frames / chunk_frames();
  const int64_t rest = frames % chunk_frames();
  return full * tokens_per_chunk() + (rest > 0 ? conv_out_len(conv_out_len(conv_out_len(rest))) : 0);
}

// ------------------------------------------------------------------------------------------------
// Session state: scratch activations and the KV cache.

// Scratch activations kept across calls, in backend memory (DeviceBuffer): a buffer grows to the largest
// size asked of it and is reused, so a decode step or a repeated encode allocates (and page-faults) nothing.
// Contents are not cleared: every user writes what it reads.
struct Session::State {
  Backend* be;
  // KV cache: per layer, [capacity, kv_heads * head_dim] for keys and for values.
  std::vector<DeviceBuffer> k_cache, v_cache;
  int64_t capacity = 0;
  // Encoder: conv stem (img, a1, a2, a3, flat), positional table (pe), layers (h, x, q, k, v, att, mid),
  // projector output (emb).
  DeviceBuffer img, a1, a2, a3, flat, pe, h, x, q, k, v, att, mid, emb;
  int64_t pe_rows = 0;  // rows of `pe` filled
  // Decoder: x, q, att, gate, up, the embeddings h (+ final-norm output row), logits.
  DeviceBuffer dx, dq, datt, dgate, dup, dh, logits;
  std::vector<float> host;  // host staging (a conv-stem chunk, the positional table)
  std::vector<float> host_logits;  // a step's logits on the host

  explicit State(Backend* backend) : be(backend) {
    for (DeviceBuffer* b : {&img, &a1, &a2, &a3, &flat, &pe, &h, &x, &q, &k, &v, &att, &mid, &emb, &dx, &dq,
                            &datt, &dgate, &dup, &dh, &logits})
      b->bind(backend);
  }

  // lowMemory: the encoder's activations are not needed while decoding (~40 MB for 60 s of audio with
  // 0.6B), so long inputs free them; the next encode allocates them again. Below 24 MiB (~25 s) they are
  // kept: faulting fresh pages in costs more than they weigh (measured on the reference VM: +40 ms on an
  // 11 s encode for ~12 MB, +60-100 ms on a 60 s encode for ~55 MB less peak RSS).
  // RUSTASR_ENCODER_SCRATCH_KEEP_BYTES overrides the 24 MiB (the native tests set 0: always free).
  void release_encoder_scratch() {
    static const int64_t keep = [] {
      const char* e = std::getenv("RUSTASR_ENCODER_SCRATCH_KEEP_BYTES");
      return e && *e ? static_cast<int64_t>(std::strtoll(e, nullptr, 10)) : (int64_t(24) << 20);
    }();
    const std::initializer_list<DeviceBuffer*> bufs = {&img, &a1, &a2, &a3, &flat, &h, &x, &q, &k, &v, &att, &mid, &emb};
    int64_t floats = 0;
    for (DeviceBuffer* b : bufs) floats += b->size();
    if (floats * static_cast<int64_t>(sizeof(float)) < keep) return;
    for (DeviceBuffer* b : bufs) b->reset();
  }

  float* host_get(int64_t n) {
    if (host.size() < static_cast<size_t>(n)) host.resize(static_cast<size_t>(n));
    return host.data();
  }

  void reserve(int64_t tokens, int64_t layers, int64_t kv_dim) {
    if (k_cache.size() != static_cast<size_t>(layers)) {
      k_cache.clear();
      v_cache.clear();
      for (int64_t l = 0; l < layers; ++l) {
        k_cache.emplace_back(be);
        v_cache.emplace_back(be);
      }
      capacity = 0;
    }
    if (tokens <= capacity) return;
    const int64_t cap = std::max<int64_t>(tokens, capacity * 2);
    for (int64_t l = 0; l < layers; ++l) {
      k_cache[static_cast<size_t>(l)].grow_keep(cap * kv_dim);
      v_cache[static_cast<size_t>(l)].grow_keep(cap * kv_dim);
    }
    capacity = cap;
  }
};

Session::Session(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  if (!model_) throw Error(ErrorCode::kInvalidArgument, "Session needs a model");
  state_.reset(new State(&model_->backend()));
}

Session::~Session() = default;

std::vector<float> Session::mel(const float* samples, size_t n) const {
  const MelExtractor& mel = model_->mel();
  const int64_t frames = mel.frames(n);
  std::vector<float> out(static_cast<size_t>(frames) * static_cast<size_t>(model_->config().audio.num_mel_bins));
  mel.compute(samples, n, out.data());
  return out;
}

// 3. Audio encoder.
EncoderOutputs Session::encode(const float* mel, int64_t frames, bool keep_intermediate) const {
  const Model& m = *model_;
  const AudioConfig& ac = m.config().audio;
  const ModelWeights& w = m.weights();
  Backend& be = m.backend();
  if (frames <= 0) throw Error(ErrorCode::kInvalidArgument, "encode: no mel frames");
  // Stage residency (ModelParams::low_memory): only the encoder's weights while encoding, then the
  // decoder's back (each mapped in one call), unless another session of this model is busy.
  BusyScope busy(m);
  const bool stage = m.low_memory() && busy.alone();
  if (stage) {
    release_decoder_pages(w);
    populate_encoder_pages(w);
  }

  const int64_t n_mels = ac.num_mel_bins;
  const int64_t C = ac.downsample_hidden_size;
  const int64_t d = ac.d_model;
  const int64_t chunk = m.chunk_frames();
  const int64_t n_chunks = (frames + chunk - 1) / chunk;
  const int64_t N = m.audio_tokens(frames);
  const int64_t f1 = conv_out_len(n_mels), f2 = conv_out_len(f1), f3 = conv_out_len(f2);
  const int64_t feat = C * f3;  // conv_out input width, feature index c * f3 + f

  State& S = *state_;
  float* h = S.h.get(N * d);
  const int64_t t3_full = m.tokens_per_chunk();
  if (S.pe_rows < t3_full) {
    float* table = S.host_get(t3_full * d);
    sinusoid_table(table, t3_full, d);
    be.upload(S.pe.get(t3_full * d), table, t3_full * d);
    S.pe_rows = t3_full;
  }
  {
    // Conv stem, one chunk at a time, no context across chunk borders. A partial last chunk of a
    // multi-chunk utterance is zero-padded to a full chunk first (the official pad_sequence), and only
    // its first ceil(r/8) output frames are kept; a single short chunk runs at its true length.
    float* img = S.img.get(n_mels * chunk);
    float* a1 = S.a1.get(C * f1 * conv_out_len(chunk));
    float* a2 = S.a2.get(C * f2 * conv_out_len(conv_out_len(chunk)));
    float* a3 = S.a3.get(C * f3 * t3_full);
    float* flat = S.flat.get(t3_full * feat);
    float* staging = S.host_get(n_mels * chunk);
    int64_t tok = 0;
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t start = c * chunk;
      const int64_t valid = std::min(chunk, frames - start);
      const int64_t t_in = (n_chunks > 1) ? chunk : valid;
      std::fill(staging, staging + n_mels * t_in, 0.f);
      for (int64_t b = 0; b < n_mels; ++b)
        std::copy(mel + b * frames + start, mel + b * frames + start + valid, staging + b * t_in);
      be.upload(img, staging, n_mels * t_in);
      const int64_t t1 = conv_out_len(t_in), t2 = conv_out_len(t1), t3 = conv_out_len(t2);
      be.conv3x3s2_gelu(img, 1, n_mels, t_in, w.conv1_w, w.conv1_b, a1);
      be.conv3x3s2_gelu(a1, C, f1, t1, w.conv2_w, w.conv2_b, a2);
      be.conv3x3s2_gelu(a2, C, f2, t2, w.conv3_w, w.conv3_b, a3);
      const int64_t keep = conv_out_len(conv_out_len(conv_out_len(valid)));
      // [C * f3, t3] -> [t3, C * f3]; the first `keep` rows are used.
      be.transpose(a3, feat, t3, flat);
      be.linear(flat, keep, w.conv_out_w, none(), h + tok * d);
      be.add(h + tok * d, S.pe.data(), keep * d);
      tok += keep;
    }
    if (tok != N) throw Error(ErrorCode::kInternal, "encoder produced an unexpected token count");
  }

  EncoderOutputs out;
  out.n_tokens = static_cast<int>(N);
  if (keep_intermediate) {
    out.conv_pos.resize(static_cast<size_t>(N * d));
    be.download(out.conv_pos.data(), h, N * d);
  }

  // Transformer layers with bidirectional attention inside windows of `W` consecutive tokens.
  const int64_t heads = ac.encoder_attention_heads;
  const int64_t hd = d / heads;
  const int64_t W = m.attention_window();
  const int64_t ffn = ac.encoder_ffn_dim;
  float* x = S.x.get(N * d);
  float* q = S.q.get(N * d);
  float* k = S.k.get(N * d);
  float* v = S.v.get(N * d);
  float* att = S.att.get(N * d);
  float* mid = S.mid.get(N * ffn);
  for (const EncoderLayerWeights& L : w.enc_layers) {
    be.layer_norm(h, N, d, L.attn_ln_w, L.attn_ln_b, 1e-5f, x);
    be.linear(x, N, L.q_w, L.q_b, q);
    be.linear(x, N, L.k_w, L.k_b, k);
    be.linear(x, N, L.v_w, L.v_b, v);
    for (int64_t s = 0; s < N; s += W) {
      const int64_t len = std::min(W, N - s);
      be.attention(q + s * d, len, 0, k + s * d, v + s * d, len, d, heads, heads, hd, false, att + s * d);
    }
    be.linear(att, N, L.o_w, L.o_b, x);
    be.add(h, x, N * d);
    be.layer_norm(h, N, d, L.ffn_ln_w, L.ffn_ln_b, 1e-5f, x);
    be.linear(x, N, L.fc1_w, L.fc1_b, mid);
    be.gelu(mid, N * ffn);
    be.linear(mid, N, L.fc2_w, L.fc2_b, x);
    be.add(h, x, N * d);
  }

  be.layer_norm(h, N, d, w.ln_post_w, w.ln_post_b, 1e-5f, x);
  if (keep_intermediate) {
    out.ln_post.resize(static_cast<size_t>(N * d));
    be.download(out.ln_post.data(), x, N * d);
  }
  be.linear(x, N, w.proj1_w, w.proj1_b, q);
  be.gelu(q, N * d);
  float* emb = S.emb.get(N * ac.output_dim);
  be.linear(q, N, w.proj2_w, w.proj2_b, emb);
  out.embeds.resize(static_cast<size_t>(N * ac.output_dim));
  be.download(out.embeds.data(), emb, N * ac.output_dim);
  if (stage) S.release_encoder_scratch();
  if (stage && busy.still_alone()) {
    release_encoder_pages(w);
    populate_decoder_pages(w);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// 5. Decoder. `forward` runs n new tokens (embeddings in `h`, [n, hidden]) at positions pos_..pos_+n-1,
// appends their keys/values to the cache and leaves the final-norm output of the last row in `last`.

namespace {

struct DecoderDims {
  int64_t hidden, heads, kv_heads, hd, inter, q_dim, kv_dim, layers, vocab;
  float eps, theta;
  explicit DecoderDims(const TextConfig& t)
      : hidden(t.hidden_size),
        heads(t.num_attention_heads),
        kv_heads(t.num_key_value_heads),
        hd(t.head_dim),
        inter(t.intermediate_size),
        q_dim(static_cast<int64_t>(t.num_attention_heads) * t.head_dim),
        kv_dim(static_cast<int64_t>(t.num_key_value_heads) * t.head_dim),
        layers(t.num_hidden_layers),
        vocab(t.vocab_size),
        eps(static_cast<float>(t.rms_norm_eps)),
        theta(static_cast<float>(t.rope_theta)) {}
};

}  // namespace

void Session::decoder_forward(int64_t pos0, float* h, int64_t n, float* last_normed) {
  const Model& m = *model_;
  std::vector<DeviceBuffer>& k_cache = state_->k_cache;
  std::vector<DeviceBuffer>& v_cache = state_->v_cache;
  const DecoderDims D(m.config().text);
  const ModelWeights& w = m.weights();
  Backend& be = m.backend();
  float* x = state_->dx.get(n * D.hidden);
  float* q = state_->dq.get(n * D.q_dim);
  float* att = state_->datt.get(n * D.q_dim);
  float* gate = state_->dgate.get(n * D.inter);
  float* up = state_->dup.get(n * D.inter);
  for (int64_t l = 0; l < D.layers; ++l) {
    const DecoderLayerWeights& L = w.dec_layers[static_cast<size_t>(l)];
    float* kc = k_cache[static_cast<size_t>(l)].data();
    float* vc = v_cache[static_cast<size_t>(l)].data();
    float* k_new = kc + pos0 * D.kv_dim;
    float* v_new = vc + pos0 * D.kv_dim;
    be.rms_norm(h, n, D.hidden, L.in_norm, D.eps, x);
    {
      const Weight* ws[3] = {&L.q_w, &L.k_w, &L.v_w};
      float* ys[3] = {q, k_new, v_new};
      be.linear_multi(x, n, ws, ys, 3);
    }
    be.rms_norm(q, n * D.heads, D.hd, L.q_norm, D.eps, q);
    be.rms_norm(k_new, n * D.kv_heads, D.hd, L.k_norm, D.eps, k_new);
    be.rope(q, n, D.heads, D.hd, pos0, D.theta);
    be.rope(k_new, n, D.kv_heads, D.hd, pos0, D.theta);
    be.attention(q, n, pos0, kc, vc, pos0 + n, D.kv_dim, D.heads, D.kv_heads, D.hd, true, att);
    be.linear(att, n, L.o_w, none(), x);
    be.add(h, x, n * D.hidden);
    be.rms_norm(h, n, D.hidden, L.post_norm, D.eps, x);
    {
      const Weight* ws[2] = {&L.gate_w, &L.up_w};
      float* ys[2] = {gate, up};
      be.linear_multi(x, n, ws, ys, 2);
    }
    be.silu_mul(gate, up, n * D.inter, gate);
    be.linear(gate, n, L.down_w, none(), x);
    be.add(h, x, n * D.hidden);
  }
  be.rms_norm(h + (n - 1) * D.hidden, 1, D.hidden, w.final_norm, D.eps, last_normed);
}

std::vector<float> Session::prefill(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio,
                                    std::vector<float>* hidden_last) {
  const Model& m = *model_;
  const DecoderDims D(m.config().text);
  if (n <= 0) throw Error(ErrorCode::kInvalidArgument, "prefill: empty prompt");
  BusyScope busy(m);
  int64_t pads = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= D.vocab)
      throw Error(ErrorCode::kInvalidArgument, "prefill: token id " + std::to_string(ids[i]) + " out of range");
    if (ids[i] == m.config().audio_token_id) ++pads;
  }
  if (pads != n_audio)
    throw Error(ErrorCode::kInvalidArgument, "prefill: the prompt has " + std::to_string(pads) +
                                                 " audio pad tokens but " + std::to_string(n_audio) +
                                                 " audio embeddings were given");
  Backend& be = m.backend();
  State& S = *state_;
  float* h = S.dh.get((n + 1) * D.hidden);
  float* last = h + n * D.hidden;
  be.embed(m.weights().embed_tokens, ids, n, h);
  // <|audio_pad|> rows are replaced, in order, by the audio embeddings (one upload per run of pads).
  int64_t a = 0;
  for (int64_t i = 0; i < n;) {
    if (ids[i] != m.config().audio_token_id) {
      ++i;
      continue;
    }
    int64_t run = 1;
    while (i + run < n && ids[i + run] == m.config().audio_token_id) ++run;
    be.upload(h + i * D.hidden, audio_embeds + a * D.hidden, run * D.hidden);
    a += run;
    i += run;
  }
  pos_ = 0;
  S.reserve(n + 64, D.layers, D.kv_dim);
  decoder_forward(0, h, n, last);
  pos_ = n;
  float* dlogits = S.logits.get(D.vocab);
  be.linear(last, 1, m.weights().lm_head, none(), dlogits);
  std::vector<float> logits(static_cast<size_t>(D.vocab));
  be.download(logits.data(), dlogits, D.vocab);
  if (hidden_last) {
    hidden_last->resize(static_cast<size_t>(D.hidden));
    be.download(hidden_last->data(), last, D.hidden);
  }
  return logits;
}

const std::vector<float>& Session::step_to_host(int32_t token) {
  const Model& m = *model_;
  const DecoderDims D(m.config().text);
  if (pos_ == 0) throw Error(ErrorCode::kInvalidArgument, "step: call prefill first");
  BusyScope busy(m);
  if (token < 0 || token >= D.vocab)
    throw Error(ErrorCode::kInvalidArgument, "step: token id " + std::to_string(token) + " out of range");
  Backend& be = m.backend();
  state_->reserve(pos_ + 1, D.layers, D.kv_dim);
  float* h = state_->dh.get(2 * D.hidden);
  float* last = h + D.hidden;
  be.embed(m.weights().embed_tokens, &token, 1, h);
  decoder_forward(pos_, h, 1, last);
  ++pos_;
  float* dlogits = state_->logits.get(D.vocab);
  be.linear(last, 1, m.weights().lm_head, none(), dlogits);
  std::vector<float>& logits = state_->host_logits;
  logits.resize(static_cast<size_t>(D.vocab));
  be.download(logits.data(), dlogits, D.vocab);
  return logits;
}

std::vector<float> Session::step(int32_t token) { return step_to_host(token); }

int32_t Session::step_greedy(int32_t token) {
  const std::vector<float>& logits = step_to_host(token);
  return argmax(logits.data(), static_cast<int64_t>(logits.size()));
}

int32_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return static_cast<int32_t>(best);
}

// ------------------------------------------------------------------------------------------------
// Loading.

namespace {

// Every weight view of the model, for Backend::prepare_weight. Empty (absent optional) weights are skipped.
template <typename F>
void for_each_weight(ModelWeights& w, F&& f) {
  auto each = [&](Weight& x) {
    if (!x.empty()) f(x);
  };
  for (Weight* x : {&w.conv1_w, &w.conv1_b, &w.conv2_w, &w.conv2_b, &w.conv3_w, &w.conv3_b, &w.conv_out_w,
                    &w.ln_post_w, &w.ln_post_b, &w.proj1_w, &w.proj1_b, &w.proj2_w, &w.proj2_b, &w.embed_tokens,
                    &w.final_norm, &w.lm_head})
    each(*x);
  for (EncoderLayerWeights& L : w.enc_layers)
    for (Weight* x : {&L.attn_ln_w, &L.attn_ln_b, &L.q_w, &L.q_b, &L.k_w, &L.k_b, &L.v_w, &L.v_b, &L.o_w, &L.o_b,
                      &L.ffn_ln_w, &L.ffn_ln_b, &L.fc1_w, &L.fc1_b, &L.fc2_w, &L.fc2_b})
      each(*x);
  for (DecoderLayerWeights& L : w.dec_layers)
    for (Weight* x : {&L.in_norm, &L.q_w, &L.k_w, &L.v_w, &L.o_w, &L.q_norm, &L.k_norm, &L.post_norm, &L.gate_w,
                      &L.up_w, &L.down_w})
      each(*x);
}

// "auto": CUDA if usable, else Metal if usable, else CPU. A GPU that probes as present but fails to start
// falls back to the CPU, with the reason in *fallback.
std::unique_ptr<Backend> pick_backend(const std::string& device, const BackendOptions& bo, std::string* fallback) {
  if (device.empty() || device == "cpu") return make_cpu_backend(bo);
  if (device != "auto") return make_backend(device, bo);
  for (const DeviceInfo& d : probe_devices()) {
    if (d.kind == "cpu" || !d.available) continue;
    try {
      return make_backend(d.kind, bo);
    } catch (const Error& e) {
      *fallback = e.what();
    }
  }
  return make_cpu_backend(bo);
}

}  // namespace

std::shared_ptr<const Model> load_model(const std::string& dir, const ModelParams& params) {
  if (params.threads < 0) throw Error(ErrorCode::kInvalidArgument, "threads must be >= 0");
  const bool int8 = params.quant == "int8";
  if (!int8 && params.quant != "bf16" && !params.quant.empty())
    throw Error(ErrorCode::kInvalidArgument, "unknown quant \"" + params.quant + "\" (expected bf16 or int8)");
  ModelConfig config = load_model_config(dir + "/config.json");
  MelParams mel_params = load_mel_params(dir, config.audio.num_mel_bins);
  BackendOptions bo;
  bo.threads = params.threads;
  bo.kernel = params.kernel;
  bo.device_index = params.device_index;
  std::string fallback;
  std::unique_ptr<Backend> backend = pick_backend(params.device, bo, &fallback);
  ModelWeights weights = load_model_weights(dir, config);
  // 2 MiB pages only matter where the CPU reads the mapping (a GPU backend copies the weights once).
  const bool large_pages = params.large_pages && backend->name() == "cpu";
  if (large_pages) {
    prepare_weight_pages(weights, false);
    keep_lookups_in_small_pages(weights, int8);
  }
  if (int8) make_decoder_int8(weights, backend->threads(), dir, Int8CacheOptions{params.int8_cache, params.cache_dir});
  if (large_pages && int8) prepare_weight_pages(weights, true);
  for_each_weight(weights, [&](Weight& w) { backend->prepare_weight(w); });
  auto model = std::make_shared<Model>(std::move(config), std::move(weights), std::move(backend), mel_params);
  model->set_device_fallback(fallback);
  model->set_low_memory(params.low_memory && model->backend().name() == "cpu");
  return model;
}

std::vector<DeviceStatus> devices() {
  std::vector<DeviceStatus> out;
  for (const DeviceInfo& d : probe_devices()) out.push_back(DeviceStatus{d.kind, d.available, d.name, d.reason});
  return out;
}

ModelInfo model_info(const Model& m) {
  const ModelConfig& c = m.config();
  ModelInfo i;
  i.num_mel_bins = c.audio.num_mel_bins;
  i.encoder_d_model = c.audio.d_model;
  i.encoder_layers = c.audio.encoder_layers;
  i.audio_output_dim = c.audio.output_dim;
  i.hidden_size = c.text.hidden_size;
  i.decoder_layers = c.text.num_hidden_layers;
  i.vocab_size = c.text.vocab_size;
  i.audio_token_id = c.audio_token_id;
  i.audio_start_token_id = c.audio_start_token_id;
  i.audio_end_token_id = c.audio_end_token_id;
  i.tied_embeddings = c.text.tie_word_embeddings;
  i.support_languages = c.support_languages;
  i.kernel = m.backend().kernel();
  i.threads = m.backend().threads();
  i.quant = m.weights().lm_head.dtype == DType::kI8 ? "int8" : "bf16";
  i.device = m.backend().name();
  i.device_name = m.backend().device_name();
  i.device_fallback = m.device_fallback();
  i.sample_rate = m.mel().params().sample_rate;
  i.hop_length = m.mel().params().hop;
  i.large_pages = m.weights().large_pages;
  return i;
}

}  // namespace rustasr
