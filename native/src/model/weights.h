// The named tensors of a Qwen3-ASR checkpoint, bound to views of the memory-mapped safetensors files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../io/config.h"
#include "../util/tensor.h"

namespace rustasr {

class SafetensorsArchive;  // io/safetensors.h

struct EncoderLayerWeights {
  Weight attn_ln_w, attn_ln_b;           // self_attn_layer_norm
  Weight q_w, q_b, k_w, k_b, v_w, v_b;   // self_attn.{q,k,v}_proj
  Weight o_w, o_b;                       // self_attn.out_proj
  Weight ffn_ln_w, ffn_ln_b;             // final_layer_norm
  Weight fc1_w, fc1_b, fc2_w, fc2_b;
};

struct DecoderLayerWeights {
  Weight in_norm;                        // input_layernorm
  Weight q_w, k_w, v_w, o_w;             // self_attn.{q,k,v,o}_proj (no bias)
  Weight q_norm, k_norm;                 // self_attn.{q,k}_norm [head_dim]
  Weight post_norm;                      // post_attention_layernorm
  Weight gate_w, up_w, down_w;           // mlp.{gate,up,down}_proj
};

struct ModelWeights {
  // audio tower (thinker.audio_tower.*)
  Weight conv1_w, conv1_b, conv2_w, conv2_b, conv3_w, conv3_b;  // conv2d{1,2,3}: w viewed [cout, cin*9]
  Weight conv_out_w;                                            // [d_model, C * (mel/8)], no bias
  std::vector<EncoderLayerWeights> enc_layers;
  Weight ln_post_w, ln_post_b;
  Weight proj1_w, proj1_b, proj2_w, proj2_b;
  // text decoder (thinker.model.*, thinker.lm_head.weight)
  Weight embed_tokens;                                          // [vocab, hidden]
  std::vector<DecoderLayerWeights> dec_layers;
  Weight final_norm;
  Weight lm_head;                                               // = embed_tokens when tied and absent

  // Keeps the mapped files alive as long as the views above are used.
  std::vector<std::shared_ptr<SafetensorsArchive>> archives;
  // Buffers made at load (int8 weights and their scales, or the mapped int8 cache file) that views above
  // point into.
  std::vector<std::shared_ptr<void>> owned;

  // Where the int8 decoder came from (make_decoder_int8): "off" (BF16 weights, or int8 quantised at load
  // with the cache disabled), "hit" (mapped from a valid cache file), "miss" (quantised at load, then
  // written to the cache and mapped from it), "unwritable" (quantised at load; the cache file could not be
  // written, so the int8 weights stay in anonymous memory).
  std::string int8_cache = "off";
  std::string int8_cache_path;  // the cache file read or written ("" when none)
  bool int8_mapped = false;     // the int8 weights point into the mapped cache file (file-backed pages)
  const void* int8_map_base = nullptr;  // that file's mapping (when int8_mapped)
  size_t int8_map_size = 0;
  // 2 MiB pages for the mapped files (prepare_weight_pages): "off" when not asked for, else the least
  // favourable LargePageReport state over the mapped files (see io/large_pages.h).
  std::string large_pages = "off";
};

// Opens `dir`/model.safetensors or `dir`/model.safetensors.index.json (sharded), then binds every tensor the
// config requires, checking name, shape and dtype (BF16/F16/F32 accepted). The first problem is thrown:
// kMissingTensor "missing tensor thinker.model.layers.3.mlp.up_proj.weight",
// kTensorShape "tensor X has shape [a, b], expected [c, d]", kUnsupportedDtype, kCorruptWeights, kModelNotFound.
ModelWeights load_model_weights(const std::string& dir, const ModelConfig& config);

}  // namespace rustasr
