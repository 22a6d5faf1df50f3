// The shared Model: its encoder geometry, loading (config, weights, backend) and the facts it reports. The
// forward pass is in encoder.cpp and decoder.cpp, the per-transcription state in session.cpp.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <thread>

#include "../io/config.h"
#include "int8.h"
#include "residency.h"
#include "../io/preprocessor.h"
#include "../util/json.h"

namespace rustasr {

Model::Model(ModelConfig config, ModelWeights weights, std::unique_ptr<Backend> backend, MelParams mel_params)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(std::move(backend)),
      mel_(mel_params),
      batcher_(std::make_unique<StepBatcher>(*this)) {}

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

}  // namespace

std::shared_ptr<const Model> load_model(const std::string& dir, const ModelParams& params) {
  if (params.threads < 0) throw Error(ErrorCode::kInvalidArgument, "threads must be >= 0");
  const bool int4 = params.quant == "int4";
  const bool int8 = params.quant == "int8" || int4;  // quantised decoder (8 or 4 bits)
  if (!int8 && params.quant != "bf16" && !params.quant.empty())
    throw Error(ErrorCode::kInvalidArgument, "unknown quant \"" + params.quant + "\" (expected bf16, int8 or int4)");
  ModelConfig config = load_model_config(dir + "/config.json");
  MelParams mel_params = load_mel_params(dir, config.audio.num_mel_bins);
  BackendOptions bo;
  bo.threads = params.threads;
  bo.kernel = params.kernel;
  bo.device_index = params.device_index;
  bo.precision = params.precision;
  std::string fallback;
  std::unique_ptr<Backend> backend = choose_backend(params.device, bo, &fallback);
  if (int4 && backend->name() != "cpu")
    throw Error(ErrorCode::kUnsupportedDevice, "quant int4 runs on the CPU only (device " + backend->name() + ")");
  tune_allocator();
  ModelWeights weights = load_model_weights(dir, config);
  // 2 MiB pages only matter where the CPU reads the mapping (a GPU backend copies the weights once).
  const bool large_pages = params.large_pages && backend->name() == "cpu";
  if (large_pages) {
    prepare_weight_pages(weights, false);
    keep_lookups_in_small_pages(weights, int8);
  }
  if (int8)
    make_decoder_quant(weights, backend->threads(), dir, Int8CacheOptions{params.int8_cache, params.cache_dir},
                       int4 ? 4 : 8);
  if (large_pages && int8) prepare_weight_pages(weights, true);
  for_each_weight(weights, [&](Weight& w) { backend->prepare_weight(w); });
  auto model = std::make_shared<Model>(std::move(config), std::move(weights), std::move(backend), mel_params);
  model->set_device_fallback(fallback);
  model->set_low_memory(params.low_memory && model->backend().name() == "cpu");
  return model;
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
  i.precision = m.backend().precision();
  i.quant = m.weights().lm_head.dtype == DType::kI4 ? "int4" : m.weights().lm_head.dtype == DType::kI8 ? "int8" : "bf16";
  i.device = m.backend().name();
  i.device_name = m.backend().device_name();
  i.device_fallback = m.device_fallback();
  i.sample_rate = m.mel().params().sample_rate;
  i.hop_length = m.mel().params().hop;
  i.min_samples = static_cast<int64_t>(m.mel().min_samples());
  i.window_samples = (m.attention_window() / m.tokens_per_chunk()) * m.chunk_frames() * m.mel().params().hop;
  i.large_pages = m.weights().large_pages;
  i.kind = c.kind == ModelKind::kForcedAligner ? "forced_aligner" : "asr";
  i.classify_num = c.aligner.classify_num;
  i.timestamp_token_id = c.aligner.timestamp_token_id;
  i.timestamp_segment_time = c.aligner.timestamp_segment_time;
  return i;
}

std::string int8_cache_state(const Model& model) { return model.weights().int8_cache; }

}  // namespace rustasr
