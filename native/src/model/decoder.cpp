// The Qwen3 decoder with its KV cache (golden README "Exact pipeline", step 5): prefill over a prompt whose
// audio pad rows are replaced by the encoder's embeddings, then one step per generated token.
#include <algorithm>

#include "session_state.h"

namespace rustasr {

namespace {
Weight none() { return Weight{}; }

// A decoder layer after its attention, for n rows in h (the residual stream): the output projection and its
// residual, the post-attention norm, the SiLU-gated MLP and its residual (x, gate, up: scratch). One body for
// the prefill / single step and the batched step, so a row's arithmetic is the same in both (batched
// decoding's bit-identity with decoding alone rests on it).
void layer_tail(Backend& be, const DecoderDims& D, const DecoderLayerWeights& L, float* att, int64_t n, float* h,
                float* x, float* gate, float* up) {
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
}  // namespace

void Session::State::reserve(int64_t tokens, int64_t layers, int64_t kv_dim) {
  if (k_cache.size() != static_cast<size_t>(layers)) {
    k_cache.clear();
    v_cache.clear();
    for (int64_t l = 0; l < layers; ++l) {
      k_cache.emplace_back(be);
      v_cache.emplace_back(be);
    }
    capacity = 0;
    populated = 0;
  }
  if (tokens > capacity) {
    const int64_t cap = std::max<int64_t>(tokens, capacity * 2);
    for (int64_t l = 0; l < layers; ++l) {
      k_cache[static_cast<size_t>(l)].grow_keep(cap * kv_dim);
      v_cache[static_cast<size_t>(l)].grow_keep(cap * kv_dim);
    }
    capacity = cap;
  }
  if (tokens <= populated) return;
  // The rows about to be written are mapped in blocks (Backend::prefault: one call per buffer) rather than
  // one page fault at a time: a 0.6B row of one layer's keys is one 4 KiB page, so a decode step past the
  // mapped rows took 56 faults, 1-1.6 ms of a ~29 ms step on the reference VM. A prompt maps its own rows;
  // decode steps map `ahead` rows at once; the rest of a doubled capacity stays unmapped.
  // At least 64 rows and 256 KiB (the CPU backend leaves smaller ranges to the page faults).
  const int64_t row_bytes = std::max<int64_t>(1, kv_dim * static_cast<int64_t>(sizeof(float)));
  const int64_t ahead = std::max<int64_t>(64, ((int64_t(256) << 10) + row_bytes - 1) / row_bytes);
  const int64_t upto = std::min(capacity, std::max(tokens, populated + ahead));
  for (int64_t l = 0; l < layers; ++l) {
    be->prefault(k_cache[static_cast<size_t>(l)].data() + populated * kv_dim, (upto - populated) * kv_dim);
    be->prefault(v_cache[static_cast<size_t>(l)].data() + populated * kv_dim, (upto - populated) * kv_dim);
  }
  populated = upto;
}

// Runs n new tokens (embeddings in `h`, [n, hidden]) at positions pos0..pos0+n-1 in blocks of at most
// kPrefillBlockRows rows: each block goes through every layer, appending its keys/values to the cache, and
// attends to everything before it. The final-norm output of the last row goes to `last_normed`.
void Session::decoder_forward(int64_t pos0, float* h_all, int64_t n_all, float* last_normed) {
  const Model& m = *model_;
  State& S = *state_;
  const DecoderDims D(m.config().text);
  const ModelWeights& w = m.weights();
  Backend& be = m.backend();
  const int64_t rows = std::min(n_all, kPrefillBlockRows);
  float* x = S.dx.get(rows * D.hidden);
  float* q = S.dq.get(rows * D.q_dim);
  float* att = S.datt.get(rows * D.q_dim);
  float* gate = S.dgate.get(rows * D.inter);
  float* up = S.dup.get(rows * D.inter);
  for (int64_t b = 0; b < n_all; b += rows) {
    const int64_t n = std::min(rows, n_all - b);
    const int64_t p0 = pos0 + b;
    float* h = h_all + b * D.hidden;
    for (int64_t l = 0; l < D.layers; ++l) {
      if (n > 1) S.check_cancel();
      const DecoderLayerWeights& L = w.dec_layers[static_cast<size_t>(l)];
      float* kc = S.k_cache[static_cast<size_t>(l)].data();
      float* vc = S.v_cache[static_cast<size_t>(l)].data();
      float* k_new = kc + p0 * D.kv_dim;
      float* v_new = vc + p0 * D.kv_dim;
      be.rms_norm(h, n, D.hidden, L.in_norm, D.eps, x);
      {
        const Weight* ws[3] = {&L.q_w, &L.k_w, &L.v_w};
        float* ys[3] = {q, k_new, v_new};
        be.linear_multi(x, n, ws, ys, 3);
      }
      be.rms_norm(q, n * D.heads, D.hd, L.q_norm, D.eps, q);
      be.rms_norm(k_new, n * D.kv_heads, D.hd, L.k_norm, D.eps, k_new);
      be.rope(q, n, D.heads, D.hd, p0, D.theta);
      be.rope(k_new, n, D.kv_heads, D.hd, p0, D.theta);
      be.attention(q, n, p0, kc, vc, p0 + n, D.kv_dim, D.heads, D.kv_heads, D.hd, true, att);
      layer_tail(be, D, L, att, n, h, x, gate, up);
    }
  }
  be.rms_norm(h_all + (n_all - 1) * D.hidden, 1, D.hidden, w.final_norm, D.eps, last_normed);
}

int32_t Session::prefill_from(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio,
                              int64_t from, std::vector<float>* logits_out, std::vector<float>* hidden_last) {
  const Model& m = *model_;
  const DecoderDims D(m.config().text);
  const int32_t pad_id = m.config().audio_token_id;
  if (n <= 0) throw Error(ErrorCode::kInvalidArgument, "prefill: empty prompt");
  int64_t pads = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= D.vocab)
      throw Error(ErrorCode::kInvalidArgument, "prefill: token id " + std::to_string(ids[i]) + " out of range");
    if (ids[i] == pad_id) ++pads;
  }
  if (pads != n_audio)
    throw Error(ErrorCode::kInvalidArgument, "prefill: the prompt has " + std::to_string(pads) +
                                                 " audio pad tokens but " + std::to_string(n_audio) +
                                                 " audio embeddings were given");
  from = std::max<int64_t>(0, std::min(from, n - 1));
  Backend& be = m.backend();
  State& S = *state_;
  const int64_t rows = n - from;
  float* h = S.dh.get((rows + 1) * D.hidden);
  float* last = h + rows * D.hidden;
  be.embed(m.weights().embed_tokens, ids + from, rows, h);
  // <|audio_pad|> rows are replaced, in order, by the audio embeddings (one upload per run of pads).
  int64_t a = 0;
  for (int64_t i = 0; i < n;) {
    if (ids[i] != pad_id) {
      ++i;
      continue;
    }
    int64_t run = 1;
    while (i + run < n && ids[i + run] == pad_id) ++run;
    const int64_t lo = std::max(i, from), hi = i + run;
    if (hi > lo) be.upload(h + (lo - from) * D.hidden, audio_embeds + (a + lo - i) * D.hidden, (hi - lo) * D.hidden);
    a += run;
    i += run;
  }
  pos_ = from;
  S.reserve(n + 64, D.layers, D.kv_dim);
  decoder_forward(from, h, rows, last);
  pos_ = n;
  float* dlogits = S.logits.get(D.vocab);
  be.linear(last, 1, m.weights().lm_head, none(), dlogits);
  std::vector<float>& logits = logits_out ? *logits_out : S.host_logits;
  logits.resize(static_cast<size_t>(D.vocab));
  be.download(logits.data(), dlogits, D.vocab);
  if (hidden_last) {
    hidden_last->resize(static_cast<size_t>(D.hidden));
    be.download(hidden_last->data(), last, D.hidden);
  }
  return argmax(logits.data(), D.vocab);
}

std::vector<float> Session::prefill(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio,
                                    std::vector<float>* hidden_last) {
  BusyScope busy(*model_);
  state_->kv_ids.clear();  // the KV cache no longer holds a start() prompt
  state_->kv_audio_start = -1;
  std::vector<float> logits;
  prefill_from(ids, n, audio_embeds, n_audio, 0, &logits, hidden_last);
  return logits;
}

namespace {
void check_step(const Model& m, int64_t pos, int32_t token) {
  if (pos == 0) throw Error(ErrorCode::kInvalidArgument, "step: call prefill first");
  if (token < 0 || token >= m.config().text.vocab_size)
    throw Error(ErrorCode::kInvalidArgument, "step: token id " + std::to_string(token) + " out of range");
}
}  // namespace

const std::vector<float>& Session::step_to_host(int32_t token) {
  const Model& m = *model_;
  const DecoderDims D(m.config().text);
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

void Session::step_rows(const Model& m, Session* const* ss, const int32_t* tokens, int n, State& S, int32_t* ids,
                        std::vector<float>* const* logits_out) {
  if (n <= 0) return;
  const DecoderDims D(m.config().text);
  const ModelWeights& w = m.weights();
  Backend& be = m.backend();
  for (int i = 0; i < n; ++i) ss[i]->state_->reserve(ss[i]->pos_ + 1, D.layers, D.kv_dim);
  float* h = S.dh.get(n * D.hidden);
  float* x = S.dx.get(n * D.hidden);
  float* last = S.h.get(n * D.hidden);
  float* q = S.dq.get(n * D.q_dim);
  float* kn = S.k.get(n * D.kv_dim);
  float* vn = S.v.get(n * D.kv_dim);
  float* att = S.datt.get(n * D.q_dim);
  float* gate = S.dgate.get(n * D.inter);
  float* up = S.dup.get(n * D.inter);
  // Each op below computes every row as the single-row step does (decoder_forward with n = 1): row-wise ops
  // on all rows at once (their per-row arithmetic does not depend on the other rows), RoPE, the KV append and
  // attention per session at its own position.
  std::vector<Backend::AttentionRow> arows(static_cast<size_t>(n));
  be.embed(w.embed_tokens, tokens, n, h);
  for (int64_t l = 0; l < D.layers; ++l) {
    const DecoderLayerWeights& L = w.dec_layers[static_cast<size_t>(l)];
    be.rms_norm(h, n, D.hidden, L.in_norm, D.eps, x);
    {
      const Weight* ws[3] = {&L.q_w, &L.k_w, &L.v_w};
      float* ys[3] = {q, kn, vn};
      be.linear_multi(x, n, ws, ys, 3);
    }
    be.rms_norm(q, n * D.heads, D.hd, L.q_norm, D.eps, q);
    be.rms_norm(kn, n * D.kv_heads, D.hd, L.k_norm, D.eps, kn);
    for (int i = 0; i < n; ++i) {
      State& Si = *ss[i]->state_;
      const int64_t p = ss[i]->pos_;
      float* qi = q + i * D.q_dim;
      float* ki = kn + i * D.kv_dim;
      be.rope(qi, 1, D.heads, D.hd, p, D.theta);
      be.rope(ki, 1, D.kv_heads, D.hd, p, D.theta);
      float* kc = Si.k_cache[static_cast<size_t>(l)].data();
      float* vc = Si.v_cache[static_cast<size_t>(l)].data();
      be.copy(kc + p * D.kv_dim, ki, D.kv_dim);
      be.copy(vc + p * D.kv_dim, vn + i * D.kv_dim, D.kv_dim);
      arows[static_cast<size_t>(i)] = {qi, p, kc, vc, att + i * D.q_dim};
    }
    be.attention_rows(arows.data(), n, D.kv_dim, D.heads, D.kv_heads, D.hd);
    layer_tail(be, D, L, att, n, h, x, gate, up);
  }
  be.rms_norm(h, n, D.hidden, w.final_norm, D.eps, last);
  float* dlogits = S.logits.get(n * D.vocab);
  be.linear(last, n, w.lm_head, none(), dlogits);
  for (int i = 0; i < n; ++i) {
    std::vector<float>& out = logits_out[i] ? *logits_out[i] : S.host_logits;
    out.resize(static_cast<size_t>(D.vocab));
    be.download(out.data(), dlogits + i * D.vocab, D.vocab);
    ids[i] = argmax(out.data(), D.vocab);
    ++ss[i]->pos_;
  }
}

std::vector<float> Session::step(int32_t token) {
  check_step(*model_, pos_, token);
  state_->check_cancel();
  BusyScope busy(*model_);
  if (model_->backend().rows_independent()) {
    std::vector<float> logits;
    model_->batcher().step(*this, token, &logits);
    return logits;
  }
  return step_to_host(token);
}

int32_t Session::step_greedy(int32_t token) {
  check_step(*model_, pos_, token);
  state_->check_cancel();
  BusyScope busy(*model_);
  if (model_->backend().rows_independent()) return model_->batcher().step(*this, token, nullptr);
  const std::vector<float>& logits = step_to_host(token);
  return argmax(logits.data(), static_cast<int64_t>(logits.size()));
}

int32_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return static_cast<int32_t>(best);
}

}  // namespace rustasr
