// The official Qwen3-ASR config.json schema (top level + thinker_config.audio_config / text_config),
// reduced to what inference needs. Every dimension of the engine comes from here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rustasr {

struct AudioConfig {
  int num_mel_bins = 0;            // 128
  int d_model = 0;                 // encoder width
  int encoder_layers = 0;
  int encoder_attention_heads = 0;
  int encoder_ffn_dim = 0;
  int downsample_hidden_size = 0;  // conv channels
  int output_dim = 0;              // proj2 output = decoder hidden
  int n_window = 0;                // must be 50 (see golden README)
  int n_window_infer = 0;          // attention window, in mel frames (multiple of 100)
  int max_source_positions = 0;
  std::string activation_function; // "gelu"
};

struct TextConfig {
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  int intermediate_size = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 0;
  double rope_theta = 0;
  bool tie_word_embeddings = false;
  std::string hidden_act;          // "silu"
};

// What a checkpoint is for: speech recognition (Qwen3-ASR, lm_head over the vocabulary) or forced
// alignment (Qwen3-ForcedAligner: thinker_config.model_type contains "forced_aligner", as the official
// modeling code tests; lm_head is a classify_num-way classifier read at the <timestamp> positions).
enum class ModelKind { kAsr, kForcedAligner };

// The forced aligner's fields (ModelKind::kForcedAligner only; zero otherwise).
struct AlignerConfig {
  int classify_num = 0;                 // thinker_config.classify_num: lm_head rows (timestamp classes)
  int timestamp_token_id = 0;           // top level: the <timestamp> slot token (151705)
  double timestamp_segment_time = 0;    // top level: milliseconds per class (80)
};

struct ModelConfig {
  ModelKind kind = ModelKind::kAsr;
  AlignerConfig aligner;
  AudioConfig audio;
  TextConfig text;
  int audio_token_id = 0;          // <|audio_pad|>
  int audio_start_token_id = 0;
  int audio_end_token_id = 0;
  std::vector<std::string> support_languages;
};

// Sane bounds on config.json's numbers, checked before anything is sized by them (the weights then pin
// every width to the tensors present). The official checkpoints are far inside them: 0.6B has d_model
// 896, hidden_size 1024, 18 + 28 layers, vocab 151936; 1.7B d_model 1024, hidden 2048, 24 + 28 layers.
constexpr int64_t kMaxWidth = 131072;         // widths, head counts, head_dim, ffn sizes
constexpr int64_t kMaxLayers = 1024;          // encoder_layers, num_hidden_layers
constexpr int64_t kMaxVocab = 16777216;       // vocab_size (2^24)
constexpr int64_t kMaxPositions = 16777216;   // max_position_embeddings, max_source_positions, n_window_infer
constexpr double kMaxRopeTheta = 1e12;        // rope_theta; rms_norm_eps is at most 1
constexpr int kMelBins = 128;                 // num_mel_bins: the official processor's 128 mel bins

// Parses config.json text. Throws Error(kInvalidConfig) naming the first bad or missing field, e.g.
// "config.json: thinker_config.text_config.hidden_size: expected a positive integer".
// Also checks consistency: heads divide d_model, num_attention_heads % num_key_value_heads == 0,
// n_window == 50, n_window_infer a positive multiple of 100, num_mel_bins == 128, output_dim == hidden_size.
// Integers may be written as integral floats (64.0); every number must lie inside the bounds above.
// A forced aligner also needs a positive thinker_config.classify_num, a top-level timestamp_token_id inside the
// vocabulary and a positive timestamp_segment_time.
ModelConfig parse_model_config(const std::string& json_text);
// Reads and parses `path`: kModelNotFound if absent, kIo if it is not a regular file (a FIFO, a device),
// kInvalidConfig if it is over kMaxConfigBytes.
ModelConfig load_model_config(const std::string& path);

}  // namespace rustasr
