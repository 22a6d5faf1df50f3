// Internal: the state of a Session (scratch activations, KV cache, the current segment's live state) and the
// helpers the session's files share (encoder.cpp, decoder.cpp, session.cpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <vector>

#include <rustasr/engine.h>

#include "../backend/backend.h"
#include "model.h"

namespace rustasr {

// Counts a session as busy on its model for the duration of one call (start, encode, prefill, step).
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

// Prompt rows the decoder runs through all its layers at once: a block bounds the scratch activations and
// is the grain of cancellation (one layer of a 512-row block of 0.6B is ~16 GFLOP, ~50 ms on the reference VM).
constexpr int64_t kPrefillBlockRows = 512;
// Audio tokens per encoder block (whole attention windows): the same role for the encoder.
constexpr int64_t kEncoderBlockTokens = 1024;

// Scratch activations kept across calls, in backend memory (DeviceBuffer): a buffer grows to the largest
// size asked of it and is reused, so a decode step or a repeated encode allocates (and page-faults) nothing.
// Contents are not cleared: every user writes what it reads.
struct Session::State {
  Backend* be;
  std::atomic<bool> cancelled{false};
  // KV cache: per layer, [capacity, kv_heads * head_dim] for keys and for values.
  std::vector<DeviceBuffer> k_cache, v_cache;
  int64_t capacity = 0;
  int64_t populated = 0;  // rows of every cache buffer mapped ahead of use (Backend::prefault)
  // Encoder: conv stem (img, a1, a2, a3, flat), positional table (pe), layers (h, x, q, k, v, att, mid),
  // projector output (emb).
  DeviceBuffer img, a1, a2, a3, flat, pe, h, x, q, k, v, att, mid, emb;
  int64_t pe_rows = 0;  // rows of `pe` filled
  // Decoder: x, q, att, gate, up, the embeddings h (+ final-norm output row), logits.
  DeviceBuffer dx, dq, datt, dgate, dup, dh, logits;
  std::vector<float> host;         // host staging (a conv-stem chunk, the positional table)
  std::vector<float> host_logits;  // a step's logits on the host

  // ---- the current segment (Session::append_audio / start) ----
  std::vector<float> audio;        // samples from audio_offset on
  int64_t audio_offset = 0;        // samples dropped from the front (incremental: covered by cached windows)
  int64_t audio_total = 0;         // samples appended since reset_audio
  bool incremental_used = false;   // the segment has run start(incremental)
  // Incremental log-mel: raw log10 values of final frames [log_first, log_first + log_count), frame-major.
  std::vector<float> log_store;
  int64_t log_first = 0, log_count = 0;
  double log_max = -std::numeric_limits<double>::infinity();  // over every final frame computed
  // Encoder cache: embeddings of complete windows, [cached_tokens, output_dim] (host), and the frames they cover.
  std::vector<float> enc_cache;
  int64_t cached_tokens = 0, cached_frames = 0;
  // What the KV cache holds: the prompt ids at positions 0..kv_ids.size()-1, where the audio pads start, and
  // how many leading audio rows were final (cached) encoder output.
  std::vector<int32_t> kv_ids;
  int64_t kv_audio_start = -1, kv_audio_final = 0;
  std::vector<float> embeds;       // start(): the segment's audio embeddings (host)
  std::vector<float> mel;          // start(): encoder input [n_mels, frames] (host)

  explicit State(Backend* backend) : be(backend) {
    for (DeviceBuffer* b : {&img, &a1, &a2, &a3, &flat, &pe, &h, &x, &q, &k, &v, &att, &mid, &emb, &dx, &dq,
                            &datt, &dgate, &dup, &dh, &logits})
      b->bind(backend);
  }

  void check_cancel() const {
    if (cancelled.load(std::memory_order_relaxed)) throw Error(ErrorCode::kAborted, "the session was cancelled");
  }

  // lowMemory: the encoder's activations are not needed while decoding (~40 MB for 60 s of audio with
  // 0.6B), so long inputs free them; the next encode allocates them again. Below 24 MiB (~25 s) they are
  // kept: faulting fresh pages in costs more than they weigh (measured on the reference VM: +40 ms on an
  // 11 s encode for ~12 MB, +60-100 ms on a 60 s encode for ~55 MB less peak RSS).
  // RUSTASR_ENCODER_SCRATCH_KEEP_BYTES overrides the 24 MiB (the native tests set 0: always free).
  void release_encoder_scratch();

  float* host_get(int64_t n) {
    if (host.size() < static_cast<size_t>(n)) host.resize(static_cast<size_t>(n));
    return host.data();
  }

  void reserve(int64_t tokens, int64_t layers, int64_t kv_dim);

  // Drops the segment (audio, log-mel, encoder cache, what the KV cache holds).
  void reset_segment();
};

// Runs the encoder over `frames` mel frames (host memory, [n_mels, stride] row-major, column 0 = the first
// frame to encode; the range starts on a conv-chunk boundary of the segment). `multi_chunk`: the whole
// segment has more than one conv chunk, so a partial last chunk is zero-padded to a full one (the official
// pad_sequence). Writes [audio_tokens(frames), output_dim] embeddings to `embeds` (host); `inter` (optional)
// receives conv_pos and ln_post. Checks the session's cancel flag between chunks and layers.
void run_encoder(const Model& m, Session::State& S, const float* mel, int64_t stride, int64_t frames,
                 bool multi_chunk, float* embeds, EncoderOutputs* inter);

}  // namespace rustasr
