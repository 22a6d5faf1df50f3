// The AuT audio encoder (golden README "Exact pipeline", step 3), written once against the Backend ops.
//
// The work is done in blocks of whole attention windows: a window's tokens attend only inside the window,
// and every other op is per row, so a block runs the conv stem, every layer and the projector on its own.
// That bounds the scratch activations by the block (not the input) and gives the cancel checks their grain.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "residency.h"
#include "session_state.h"

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

}  // namespace

void Session::State::release_encoder_scratch() {
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

void run_encoder(const Model& m, Session::State& S, const float* mel, int64_t stride, int64_t frames,
                 bool multi_chunk, float* embeds, EncoderOutputs* inter) {
  const AudioConfig& ac = m.config().audio;
  const ModelWeights& w = m.weights();
  Backend& be = m.backend();
  const int64_t n_mels = ac.num_mel_bins;
  const int64_t C = ac.downsample_hidden_size;
  const int64_t d = ac.d_model;
  const int64_t out_dim = ac.output_dim;
  const int64_t chunk = m.chunk_frames();
  const int64_t t3_full = m.tokens_per_chunk();
  const int64_t f1 = conv_out_len(n_mels), f2 = conv_out_len(f1), f3 = conv_out_len(f2);
  const int64_t feat = C * f3;  // conv_out input width, feature index c * f3 + f
  const int64_t heads = ac.encoder_attention_heads;
  const int64_t hd = d / heads;
  const int64_t ffn = ac.encoder_ffn_dim;
  const int64_t W = m.attention_window();             // tokens per attention window
  const int64_t window_chunks = W / t3_full;          // conv chunks per window
  const int64_t block_windows = std::max<int64_t>(1, kEncoderBlockTokens / W);
  const int64_t block_frames = block_windows * window_chunks * chunk;
  const int64_t N = m.audio_tokens(frames);
  if (frames <= 0) throw Error(ErrorCode::kInvalidArgument, "encode: no mel frames");
  if (inter) {
    inter->conv_pos.resize(static_cast<size_t>(N * d));
    inter->ln_post.resize(static_cast<size_t>(N * d));
  }

  if (S.pe_rows < t3_full) {
    float* table = S.host_get(t3_full * d);
    sinusoid_table(table, t3_full, d);
    be.upload(S.pe.get(t3_full * d), table, t3_full * d);
    S.pe_rows = t3_full;
  }
  const int64_t max_rows = std::min<int64_t>(N, block_windows * W);
  float* a1 = S.a1.get(C * f1 * conv_out_len(chunk));
  float* a2 = S.a2.get(C * f2 * conv_out_len(conv_out_len(chunk)));
  float* a3 = S.a3.get(C * f3 * t3_full);
  float* flat = S.flat.get(t3_full * feat);
  float* img = S.img.get(n_mels * chunk);
  float* h = S.h.get(max_rows * d);
  float* x = S.x.get(max_rows * d);
  float* q = S.q.get(max_rows * d);
  float* k = S.k.get(max_rows * d);
  float* v = S.v.get(max_rows * d);
  float* att = S.att.get(max_rows * d);
  float* mid = S.mid.get(max_rows * ffn);
  float* emb = S.emb.get(max_rows * out_dim);
  float* staging = S.host_get(n_mels * chunk);

  int64_t tok0 = 0;  // first token of the block
  for (int64_t b0 = 0; b0 < frames; b0 += block_frames) {
    const int64_t b1 = std::min(frames, b0 + block_frames);
    // Conv stem, one chunk at a time, no context across chunk borders. A partial last chunk of a
    // multi-chunk segment is zero-padded to a full chunk first (the official pad_sequence), and only its
    // first ceil(r/8) output frames are kept; a single short chunk runs at its true length.
    int64_t tok = 0;
    for (int64_t start = b0; start < b1; start += chunk) {
      S.check_cancel();
      const int64_t valid = std::min(chunk, frames - start);
      const int64_t t_in = multi_chunk ? chunk : valid;
      std::fill(staging, staging + n_mels * t_in, 0.f);
      for (int64_t r = 0; r < n_mels; ++r)
        std::copy(mel + r * stride + start, mel + r * stride + start + valid, staging + r * t_in);
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
    const int64_t n = tok;  // tokens of the block
    if (inter) be.download(inter->conv_pos.data() + tok0 * d, h, n * d);

    // Transformer layers with bidirectional attention inside windows of W consecutive tokens.
    for (const EncoderLayerWeights& L : w.enc_layers) {
      S.check_cancel();
      be.layer_norm(h, n, d, L.attn_ln_w, L.attn_ln_b, 1e-5f, x);
      be.linear(x, n, L.q_w, L.q_b, q);
      be.linear(x, n, L.k_w, L.k_b, k);
      be.linear(x, n, L.v_w, L.v_b, v);
      for (int64_t s = 0; s < n; s += W) {
        const int64_t len = std::min(W, n - s);
        be.attention(q + s * d, len, 0, k + s * d, v + s * d, len, d, heads, heads, hd, false, att + s * d);
      }
      be.linear(att, n, L.o_w, L.o_b, x);
      be.add(h, x, n * d);
      be.layer_norm(h, n, d, L.ffn_ln_w, L.ffn_ln_b, 1e-5f, x);
      be.linear(x, n, L.fc1_w, L.fc1_b, mid);
      be.gelu(mid, n * ffn);
      be.linear(mid, n, L.fc2_w, L.fc2_b, x);
      be.add(h, x, n * d);
    }
    be.layer_norm(h, n, d, w.ln_post_w, w.ln_post_b, 1e-5f, x);
    if (inter) be.download(inter->ln_post.data() + tok0 * d, x, n * d);
    be.linear(x, n, w.proj1_w, w.proj1_b, q);
    be.gelu(q, n * d);
    be.linear(q, n, w.proj2_w, w.proj2_b, emb);
    be.download(embeds + tok0 * out_dim, emb, n * out_dim);
    tok0 += n;
  }
  if (tok0 != N) throw Error(ErrorCode::kInternal, "encoder produced an unexpected token count");
}

// 3. Audio encoder, stage by stage (the whole input as one segment).
EncoderOutputs Session::encode(const float* mel, int64_t frames, bool keep_intermediate) const {
  const Model& m = *model_;
  if (frames <= 0) throw Error(ErrorCode::kInvalidArgument, "encode: no mel frames");
  // Stage residency (ModelParams::low_memory): only the encoder's weights while encoding, then the
  // decoder's back (each mapped in one call), unless another session of this model is busy.
  BusyScope busy(m);
  StageResidency stage(m, busy.alone());
  stage.before_encode();
  EncoderOutputs out;
  const int64_t N = m.audio_tokens(frames);
  out.n_tokens = static_cast<int>(N);
  out.embeds.resize(static_cast<size_t>(N * m.config().audio.output_dim));
  run_encoder(m, *state_, mel, frames, frames, frames > m.chunk_frames(), out.embeds.data(),
              keep_intermediate ? &out : nullptr);
  if (!keep_intermediate) {
    out.conv_pos.clear();
    out.ln_post.clear();
  }
  if (stage.active()) state_->release_encoder_scratch();
  stage.after_encode(busy.still_alone());
  return out;
}

}  // namespace rustasr
