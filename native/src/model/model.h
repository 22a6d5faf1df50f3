// Internal definition of the shared Model object (see rustasr/engine.h for the public view).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <rustasr/engine.h>

#include "../audio/mel.h"
#include "../backend/backend.h"
#include "../io/config.h"
#include "batch.h"
#include "weights.h"

namespace rustasr {

class Model {
 public:
  Model(ModelConfig config, ModelWeights weights, std::unique_ptr<Backend> backend, MelParams mel_params);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  Backend& backend() const { return *backend_; }
  const MelExtractor& mel() const { return mel_; }

  // Encoder geometry, derived from the config (see golden README, "Audio encoder").
  int64_t chunk_frames() const { return 2 * static_cast<int64_t>(config_.audio.n_window); }  // 100
  int64_t tokens_per_chunk() const;                                  // 13 for 100-frame chunks
  int64_t attention_window() const;                                  // tokens per attention window
  int64_t audio_tokens(int64_t frames) const;                        // N for T mel frames

  // With device "auto": why a GPU that was found is not used ("" when none was or it is in use).
  const std::string& device_fallback() const { return device_fallback_; }
  void set_device_fallback(std::string why) { device_fallback_ = std::move(why); }

  // ModelParams::low_memory (CPU backend only), and the sessions inside encode/prefill/step right now.
  bool low_memory() const { return low_memory_; }
  void set_low_memory(bool on) { low_memory_ = on; }
  std::atomic<int>& busy_sessions() const { return busy_; }

  // Decode steps of this model's sessions that run together (model/batch.h).
  StepBatcher& batcher() const { return *batcher_; }

 private:
  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<Backend> backend_;
  MelExtractor mel_;
  std::string device_fallback_;
  bool low_memory_ = false;
  mutable std::atomic<int> busy_{0};
  std::unique_ptr<StepBatcher> batcher_;  // after backend_: it binds its scratch to the backend
};

// Output length of one 3x3 stride-2 pad-1 convolution: ceil(n / 2).
inline int64_t conv_out_len(int64_t n) { return (n + 1) / 2; }

}  // namespace rustasr
