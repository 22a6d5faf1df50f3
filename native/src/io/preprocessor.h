// preprocessor_config.json (the WhisperFeatureExtractor settings of a Qwen3-ASR checkpoint) -> MelParams.
#pragma once

#include <string>

#include "../audio/mel.h"

namespace rustasr {

// Reads `dir`/preprocessor_config.json. The file is optional: when absent the official processor's values
// are used. When present it must be a regular file of at most kMaxConfigBytes (io/file.h) holding a JSON
// object whose fields, where given, are exactly what the official processor defines and the engine
// implements: feature_size 128 (and equal to config.json's num_mel_bins, passed as n_mels), n_fft 400,
// hop_length 160, sampling_rate 16000. Integral floats (400.0) count as integers. Anything else throws
// Error(kInvalidConfig) naming the field, the value and what is supported (a non-regular file kIo), before
// any buffer is sized by it. Other fields (chunk_length, dither, ...) are ignored.
MelParams load_mel_params(const std::string& dir, int n_mels);

}  // namespace rustasr
