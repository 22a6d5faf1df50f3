// rustasr engine: the plain C++ API of the Qwen3-ASR inference core.
//
// Two objects, as in llama.cpp / whisper.cpp:
//   * Model   - immutable and shared: config, memory-mapped BF16 weights, the mel filter bank, the backend.
//               Any number of Sessions may use one Model at the same time (from different threads).
//   * Session - one transcription: mel, audio embeddings, KV cache, decode position.
//
// Every failure throws rustasr::Error, whose code() is stable (see ErrorCode) and whose what() names the
// problem (the tensor, the file, the field). Nothing here depends on Node.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace rustasr {

enum class ErrorCode {
  kInvalidArgument,     // a caller passed something out of range (bad token id, empty audio, ...)
  kModelNotFound,       // the model directory or one of its required files does not exist
  kInvalidConfig,       // config.json is malformed JSON, or misses / mistypes a required field
  kMissingTensor,       // a tensor the config requires is absent from the checkpoint
  kTensorShape,         // a tensor has the wrong shape for the config
  kUnsupportedDtype,    // a tensor has a dtype the engine cannot use (or an unknown one)
  kCorruptWeights,      // a .safetensors file is truncated, its header is malformed, or offsets lie
  kIo,                  // an OS-level read/mmap error
  kAborted,             // the caller asked the work to stop
  kUnsupportedDevice,   // the requested backend/kernel is not available on this machine / build
  kInternal,            // a bug: an invariant of the engine did not hold
};

// Stable string form of a code, e.g. "MISSING_TENSOR". These strings are part of the public API.
const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

struct ModelParams {
  int threads = 0;              // 0 = number of hardware threads
  std::string kernel = "auto";  // CPU matrix-vector path: auto | avx512bf16 | avx512f | avx2 | neon | scalar
  // Decoder weight format: "bf16" (the checkpoint's, read in place) or "int8" (the decoder's linear
  // weights and lm_head quantised at load: symmetric int8 with a float32 scale per 128 columns).
  // "int4": the same weights as symmetric int4 in blocks of 32 columns with a float32 scale each (~0.63 bytes
  // per weight; CPU only), cached like int8.
  std::string quant = "bf16";
  // int8 only: the quantised decoder is cached on disk, in `<cache_dir>/int8/`, and mapped on later loads
  // instead of being quantised again (see int8_cache_state). Empty = $RUSTASR_CACHE_DIR, else
  // $XDG_CACHE_HOME/rustasr, else $HOME/.cache/rustasr. int8_cache = false: quantise at every load, never
  // read or write the cache. A cache directory that cannot be written is not an error (quantised at load).
  std::string cache_dir;
  bool int8_cache = true;
  // CPU: keep only the running stage's weights resident. A session releases the decoder's mapped pages
  // before encoding and the encoder's after (mapping the next stage's back in one call), when no other
  // session of the model is busy at that moment. Peak RSS drops by the smaller stage's size (~0.35 GB for
  // 0.6B) for ~40 ms per GB of page-cache mapping per encode (with 2 MiB pages, see large_pages; with 4 KiB
  // pages the reference VM pays ~0.3-0.5 s per GB more on the next passes). The encoder's activation buffers
  // of long inputs are freed after each encode too (~40 MB at 60 s of audio). false: every weight stays
  // resident.
  bool low_memory = true;
  // CPU, Linux: map the weight files in 2 MiB pages where the kernel can (MADV_HUGEPAGE; mappings placed on
  // 2 MiB boundaries). A checkpoint (or int8 cache file) whose page cache holds it in 4 KiB folios (just
  // written or copied) is dropped from the page cache once at load when the file system can hold it in
  // 2 MiB folios, so it is read again (from disk or the host's cache) in 2 MiB folios as it is used.
  // ModelInfo::large_pages reports what was found. false: no advice and no page-cache drop (the kernel's
  // defaults).
  bool large_pages = true;
  // Where the model runs: "cpu", "cuda", "metal", or "auto" (CUDA when a GPU is usable, else Metal on Apple
  // Silicon, else CPU). An explicitly named GPU that cannot be used throws kUnsupportedDevice; with "auto" a
  // GPU that fails to initialise falls back to the CPU and ModelInfo::device_fallback says why.
  std::string device = "cpu";
  int device_index = 0;  // which GPU (CUDA ordinal)
  // CPU: the arithmetic of the batched products (encoder, prefill). "f32" (default): float32 activations times
  // the exactly upcast weights (golden-exact). "bf16": activations rounded to BF16 and the CPU's BF16 dot
  // product (AVX512-BF16), ~2x the products' peak rate, at a measured drift (docs/performance.md, "BF16
  // activations"); CPUs without it use "f32". Decode steps are unchanged.
  std::string precision = "f32";
};

// Read-only facts about a loaded model, all taken from config.json.
struct ModelInfo {
  int num_mel_bins;
  int encoder_d_model;
  int encoder_layers;
  int audio_output_dim;
  int hidden_size;
  int decoder_layers;
  int vocab_size;
  int audio_token_id;
  int audio_start_token_id;
  int audio_end_token_id;
  bool tied_embeddings;
  std::vector<std::string> support_languages;
  int sample_rate;     // audio rate the mel front end expects (16000)
  int hop_length;      // samples per mel frame (160)
  int64_t min_samples;     // fewest samples of a segment the mel front end accepts (n_fft / 2 + 1 = 201)
  int64_t window_samples;  // samples per encoder attention window (n_window_infer frames: 8 s for the real models)
  std::string kernel;  // the matrix-vector kernel actually in use
  int threads;
  std::string quant;   // "bf16", "int8" or "int4" (ModelParams.quant)
  std::string precision;  // "f32" or "bf16" (ModelParams.precision, as in use)
  std::string device;           // the backend in use: "cpu", "cuda" or "metal"
  std::string device_name;      // GPU name ("" on the CPU)
  std::string device_fallback;  // with device "auto": why a GPU found was not used ("" otherwise)
  // ModelParams::large_pages at load: "off", "large" (cached in 2 MiB pages), "reread" (was cached in 4 KiB
  // pages: dropped, read again in 2 MiB pages), "uncached" (read in 2 MiB pages when used, where the kernel
  // can), "unsupported" (this file system or kernel maps it in 4 KiB pages), "unknown" (no PAGEMAP_SCAN).
  std::string large_pages;
  // "asr" (Qwen3-ASR) or "forced_aligner" (Qwen3-ForcedAligner: see Aligner). The three fields after it are
  // the aligner's (0 for "asr"): lm_head classes, the <timestamp> token, milliseconds per class.
  std::string kind;
  int classify_num = 0;
  int timestamp_token_id = 0;
  double timestamp_segment_time = 0;
};

// One device kind as probed on this machine (see probe_devices()).
struct DeviceStatus {
  std::string kind;       // "cpu" | "cuda" | "metal"
  bool available = false;
  std::string name;       // the GPU's name, or the best CPU kernel
  std::string reason;     // why it is unavailable ("" when available)
};
// cpu, cuda, metal in that order. Never throws.
std::vector<DeviceStatus> devices();

class Model;
class StepBatcher;

// Intermediate encoder outputs, exposed for stage-by-stage verification.
struct EncoderOutputs {
  int n_tokens = 0;
  std::vector<float> conv_pos;    // [n_tokens, d_model]: conv stem + conv_out + positional embedding
  std::vector<float> ln_post;     // [n_tokens, d_model]: after ln_post
  std::vector<float> embeds;      // [n_tokens, output_dim]: after proj2
};

// What Session::start() runs on, besides the session's audio.
struct StartOptions {
  // false (offline segments, exact live mode): the whole segment is computed again: log-mel over all of its
  // audio (clamped by its own maximum), every encoder window, the whole prompt. The golden-exact path.
  // true (fast live mode): work from the previous start() of this segment is reused. Encoder attention windows
  // (n_window_infer mel frames) whose frames are final are encoded once and cached; only the unfinished tail
  // window is encoded again. The log-mel of cached frames keeps the clamp of the running maximum when they
  // were cached (the one difference from a full recompute). The KV cache is kept up to the first prompt
  // position whose id or audio embedding changed, and only the rest is prefilled. Audio of cached windows
  // is dropped from the session. The same session must not mix the two modes within one segment.
  bool incremental = false;
};

// What Session::start() did.
struct StartResult {
  int32_t token = 0;            // argmax of the logits at the last prompt position: the first generated id
  int64_t audio_tokens = 0;     // audio pads in the prompt (encoder output rows)
  int64_t prompt_tokens = 0;    // head + audio_tokens + tail
  int64_t reused_tokens = 0;    // prompt positions whose KV entries were kept from the previous start()
  int64_t encoded_tokens = 0;   // audio tokens the encoder computed in this call
  int64_t cached_tokens = 0;    // audio tokens in the encoder cache after this call (incremental only)
  double mel_ms = 0, encoder_ms = 0, prefill_ms = 0;
};

class Session {
 public:
  explicit Session(std::shared_ptr<const Model> model);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ---- One segment: audio in, the first token out, then one step per token. ----

  // Appends 16 kHz mono float samples to the current segment. Throws kInvalidArgument on NaN/Inf.
  void append_audio(const float* samples, size_t n);
  void append_audio(std::vector<float>&& samples);  // the same, taking the buffer over when the segment is empty
  // Starts a new segment: drops its audio, the encoder cache and the KV cache.
  void reset_audio();
  // Samples of the current segment appended so far (including any the session has dropped as cached).
  int64_t audio_samples() const;
  // Cuts the segment back to its first n samples (a live endpoint that lies behind audio already appended).
  // Encoder windows that read samples past n leave the cache; the next start() recomputes what it needs. An
  // incremental segment keeps the last 16 s (at least one attention window) of audio for this; throws
  // kInvalidArgument for a cut further back.
  void truncate_audio(int64_t n);

  // Runs the segment's audio through the log-mel, the encoder and the decoder over the prompt
  // head + <audio pads> + tail (head: the ids before the audio pads, tail: the ids after them, e.g. the
  // assistant header and a text prefix) and returns the first generated token. Continue with
  // step_greedy(). Throws kInvalidArgument for audio shorter than the mel front end needs (n_fft/2 + 1
  // samples) or a bad id, kAborted after cancel().
  StartResult start(const int32_t* head, int64_t n_head, const int32_t* tail, int64_t n_tail,
                    const StartOptions& options = {});

  // Asks the call in progress (from any thread) to stop at its next check (between conv chunks, encoder
  // layers of a block of windows, decoder layers of a block of prompt rows, decode steps); it throws
  // kAborted, and so does every later call. Never blocks.
  void cancel();

  // Greedy decoding: feeds one token and returns the id of its largest logit (argmax), without handing the
  // logits out (no per-step allocation). Sessions of one model that step at the same time are run together,
  // one pass over the weights for all of them, with results bit-identical to stepping alone (model/batch.h).
  int32_t step_greedy(int32_t token);

  // ---- Stage by stage (tests and tools): the same computations, with their intermediate results. ----

  // 16 kHz mono float samples -> log-mel [num_mel_bins, T] (row-major), T = n / hop. Throws kInvalidArgument
  // for fewer than n_fft/2 + 1 samples (201: the official reflect-padded STFT cannot handle less) or NaN/Inf.
  std::vector<float> mel(const float* samples, size_t n) const;

  // log-mel [num_mel_bins, T] -> audio embeddings. `keep_intermediate` fills conv_pos and ln_post too.
  EncoderOutputs encode(const float* mel, int64_t frames, bool keep_intermediate = false) const;

  // Runs the decoder over the whole prompt, resetting the KV cache. `ids[i] == audio_token_id` rows are
  // replaced, in order, by `audio_embeds` ([n_audio, hidden_size]); their count must equal n_audio.
  // Returns the logits of the last position ([vocab_size]); `hidden_last` (optional) receives the final
  // RMSNorm output there.
  std::vector<float> prefill(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio,
                             std::vector<float>* hidden_last = nullptr);

  // Feeds one token at the next position and returns its logits ([vocab_size]).
  std::vector<float> step(int32_t token);

  int64_t position() const { return pos_; }
  const Model& model() const { return *model_; }

  struct State;  // internal (native/src/model/session_state.h)

 private:
  friend class StepBatcher;
  // The steps of several sessions of one model as one batched step (rows = sessions; see model/batch.h):
  // token i goes through session ss[i] (its KV cache appended, its position advanced); ids[i] = argmax of its
  // logits, copied to *logits[i] when that is not null. `scratch` holds the batch's activations.
  static void step_rows(const Model& m, Session* const* ss, const int32_t* tokens, int n, State& scratch,
                        int32_t* ids, std::vector<float>* const* logits);
  bool cancelled() const;
  // Runs n new tokens (embeddings in h, [n, hidden]) at positions pos0.. through the decoder layers in
  // blocks of rows, appending to the KV cache; the final-norm output of the last row goes to last_normed.
  void decoder_forward(int64_t pos0, float* h, int64_t n, float* last_normed);
  // Embeds the prompt (audio pad rows from `audio_embeds`, host memory) from position `from` on and runs it;
  // returns the argmax, and fills `logits` / `hidden_last` when given.
  int32_t prefill_from(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio, int64_t from,
                       std::vector<float>* logits, std::vector<float>* hidden_last);
  // step() and step_greedy(): runs the token and leaves its logits in the session's host buffer.
  const std::vector<float>& step_to_host(int32_t token);
  std::shared_ptr<const Model> model_;
  std::unique_ptr<State> state_;
  int64_t pos_ = 0;
};

// ------------------------------------------------------------------------------------------------
// Forced alignment (Qwen3-ForcedAligner checkpoints, ModelInfo::kind "forced_aligner").
//
// The aligner is the ASR architecture with a classifier head: one non-autoregressive pass of the causal
// decoder over `<|audio_start|> pads <|audio_end|> unit <timestamp><timestamp> unit ...`, read at every
// <timestamp> position (the position itself, no shift). Class c there means c * timestamp_segment_time ms.

struct AlignerOutput {
  std::vector<int64_t> positions;  // [S] indices i with ids[i] == timestamp_token_id, ascending
  std::vector<int32_t> classes;    // [S] argmax of each slot's logits (first on ties, as torch.argmax)
  std::vector<float> logits;       // [S, classify_num] when asked for, else empty
  std::vector<float> hidden;       // [S, hidden_size] final-RMSNorm rows at the slots when asked for
  int n_audio_tokens = 0;          // audio pads of the input
};

class Aligner {
 public:
  // Throws kInvalidArgument unless `model` is a forced aligner.
  explicit Aligner(std::shared_ptr<const Model> model);
  ~Aligner();
  Aligner(const Aligner&) = delete;
  Aligner& operator=(const Aligner&) = delete;

  // The one pass over a whole input: `ids[i] == audio_token_id` rows are replaced, in order, by
  // `audio_embeds` ([n_audio, hidden_size]). kInvalidArgument: an empty input, an id outside the
  // vocabulary, a pad count other than n_audio, no <timestamp> token.
  AlignerOutput classify(const int32_t* ids, int64_t n, const float* audio_embeds, int64_t n_audio,
                         bool keep_logits = false, bool keep_hidden = false);

  // 16 kHz mono samples -> mel -> encoder -> `<|audio_start|>` + one pad per audio token + `<|audio_end|>`
  // + text_ids (the units and their <timestamp> pairs, as the tokenizer encodes them) -> classify.
  AlignerOutput align(const float* samples, size_t n, const int32_t* text_ids, int64_t n_text,
                      bool keep_logits = false);

  const Model& model() const { return *model_; }

 private:
  struct State;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Session> session_;  // mel and encoder
  std::unique_ptr<State> state_;
};

// Opens a model directory (config.json + model.safetensors or a sharded index) and validates every tensor.
std::shared_ptr<const Model> load_model(const std::string& dir, const ModelParams& params = {});
ModelInfo model_info(const Model& model);
// How a model's int8 decoder was made: "hit" (mapped from a valid cache file), "miss" (quantised at load and
// written to the cache), "unwritable" (quantised at load; the cache could not be written), "off" (bf16, or
// ModelParams.int8_cache = false).
std::string int8_cache_state(const Model& model);

// Decode steps since the model was loaded: the batched steps run (one pass over the weights each) and the
// session steps they served (rows; rows / batches = sessions per pass). See Session::step_greedy.
struct BatchStats {
  int64_t batches = 0;
  int64_t rows = 0;
};
BatchStats batch_stats(const Model& model);

// Matrix-vector kernels this CPU can run, best first (e.g. {"avx512bf16", "avx512f", "avx2", "scalar"}).
std::vector<std::string> cpu_kernels();

// Index of the largest value (first one on ties), as torch.argmax.
int32_t argmax(const float* v, int64_t n);

}  // namespace rustasr
