// libFuzzer target: config.json schema validation (io/config.cpp, parse_model_config).
//
// Any input must either give a ModelConfig that satisfies the documented invariants or throw
// rustasr::Error(kInvalidConfig); any other exception, a crash or a sanitizer report is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/config.h"
#include "rustasr/engine.h"

namespace {
[[noreturn]] void die(const char* why) {
  std::fprintf(stderr, "fuzz_config: %s\n", why);
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rustasr::ModelConfig c;
  try {
    c = rustasr::parse_model_config(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const rustasr::Error& e) {
    if (e.code() != rustasr::ErrorCode::kInvalidConfig) die("error code other than kInvalidConfig");
    return 0;
  }
  const rustasr::AudioConfig& a = c.audio;
  const rustasr::TextConfig& t = c.text;
  if (a.num_mel_bins <= 0 || a.num_mel_bins % 8 != 0) die("num_mel_bins");
  if (a.d_model <= 0 || a.encoder_attention_heads <= 0 || a.d_model % a.encoder_attention_heads != 0) die("d_model");
  if (a.n_window != 50) die("n_window");
  if (a.n_window_infer <= 0 || a.n_window_infer % 100 != 0) die("n_window_infer");
  if (a.output_dim != t.hidden_size) die("output_dim");
  if (t.num_attention_heads <= 0 || t.num_key_value_heads <= 0 ||
      t.num_attention_heads % t.num_key_value_heads != 0)
    die("heads");
  if (t.head_dim <= 0 || t.head_dim % 2 != 0) die("head_dim");
  if (!(t.rms_norm_eps > 0) || !(t.rope_theta > 0)) die("eps/theta");
  if (t.vocab_size <= 0 || c.audio_token_id < 0 || c.audio_token_id >= t.vocab_size ||
      c.audio_start_token_id >= t.vocab_size || c.audio_end_token_id >= t.vocab_size)
    die("token ids");
  return 0;
}
