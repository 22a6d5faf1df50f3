// Binding: the named tensors of a checkpoint, found in the mapped safetensors files, checked against the
// config (name, shape, dtype) and viewed as Weights. int8 (int8.cpp) and residency (residency.cpp) work on
// the bound weights.
#include "weights.h"

#include <sys/stat.h>

#include <algorithm>

#include "../io/safetensors.h"
#include "rustasr/engine.h"

namespace rustasr {

namespace {

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Looks tensors up in the checkpoint and turns them into Weight views. Every check throws at once, so the
// first problem in binding order is the one reported.
class Binder {
 public:
  explicit Binder(const TensorSource& src) : src_(src) {}

  bool has(const std::string& name) const { return src_.find(name).info != nullptr; }

  // Binds `name`, which must have exactly `shape`, viewed as [rows, cols] (rows * cols == numel).
  Weight bind(const std::string& name, const std::vector<int64_t>& shape, int64_t rows, int64_t cols) const {
    TensorSource::Found f = src_.find(name);
    if (!f.info) throw Error(ErrorCode::kMissingTensor, "missing tensor " + name);
    const TensorInfo& t = *f.info;
    if (!t.supported) {
      throw Error(ErrorCode::kUnsupportedDtype,
                  "tensor " + name + " has unsupported dtype " + t.dtype_str + " (expected BF16, F16 or F32)");
    }
    if (t.shape != shape) {
      throw Error(ErrorCode::kTensorShape,
                  "tensor " + name + " has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
    }
    Weight w;
    w.data = f.archive->aligned_data(t);  // aligned to the dtype size (copied if the file is misaligned)
    w.dtype = t.dtype;
    w.rows = rows;
    w.cols = cols;
    w.name = name;
    return w;
  }

  Weight vec(const std::string& name, int64_t n) const { return bind(name, {n}, 1, n); }
  Weight mat(const std::string& name, int64_t rows, int64_t cols) const {
    return bind(name, {rows, cols}, rows, cols);
  }
  // Conv2d 3x3 weight [cout, cin, 3, 3] viewed as [cout, cin * 9].
  Weight conv3x3(const std::string& name, int64_t cout, int64_t cin) const {
    return bind(name, {cout, cin, 3, 3}, cout, cin * 9);
  }

 private:
  const TensorSource& src_;
};

// 1 + the highest i among the visible tensors named `prefix`i.*, 0 when there is none.
int64_t layers_present(const TensorSource& src, const std::string& prefix) {
  int64_t n = 0;
  src.for_each_name([&](const std::string& name) {
    if (name.compare(0, prefix.size(), prefix) != 0) return;
    int64_t i = 0;
    size_t p = prefix.size(), digits = 0;
    while (p < name.size() && name[p] >= '0' && name[p] <= '9' && digits < 9) i = i * 10 + (name[p++] - '0'), ++digits;
    if (digits > 0 && p < name.size() && name[p] == '.') n = std::max(n, i + 1);
  });
  return n;
}

// A layer count of config.json must not exceed the layers the checkpoint holds: checked before anything
// is allocated per layer (a config claiming a million layers fails here, not after 1.5 GB of bookkeeping).
void check_layers(const TensorSource& src, const std::string& prefix, int64_t want, const char* field) {
  const int64_t have = layers_present(src, prefix);
  if (want > have) {
    throw Error(ErrorCode::kInvalidConfig,
                std::string("config.json: ") + field + " is " + std::to_string(want) + ", but the weights hold " +
                    (have == 0 ? std::string("no such layers") : std::to_string(have) + " (" + prefix + "0 .. " +
                                                                      prefix + std::to_string(have - 1) + ")"));
  }
}

}  // namespace

ModelWeights load_model_weights(const std::string& dir, const ModelConfig& config) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  TensorSource src;
  if (exists(index_path)) {
    src = TensorSource::open_index(index_path);
  } else if (exists(single_path)) {
    src = TensorSource::open_single(single_path);
  } else {
    throw Error(ErrorCode::kModelNotFound, "no model.safetensors or model.safetensors.index.json in " + dir);
  }

  check_layers(src, "thinker.audio_tower.layers.", config.audio.encoder_layers,
               "thinker_config.audio_config.encoder_layers");
  check_layers(src, "thinker.model.layers.", config.text.num_hidden_layers,
               "thinker_config.text_config.num_hidden_layers");

  const Binder b(src);
  ModelWeights w;

  // ---- audio tower: every dimension from the config, all in int64 to avoid overflow.
  const AudioConfig& ac = config.audio;
  const int64_t C = ac.downsample_hidden_size;
  const int64_t d = ac.d_model;
  const int64_t ffn = ac.encoder_ffn_dim;
  const int64_t out_dim = ac.output_dim;
  const int64_t conv_out_in = C * (ac.num_mel_bins / 8);  // channels x frequency after three stride-2 convs
  const std::string at = "thinker.audio_tower.";

  w.conv1_w = b.conv3x3(at + "conv2d1.weight", C, 1);
  w.conv1_b = b.vec(at + "conv2d1.bias", C);
  w.conv2_w = b.conv3x3(at + "conv2d2.weight", C, C);
  w.conv2_b = b.vec(at + "conv2d2.bias", C);
  w.conv3_w = b.conv3x3(at + "conv2d3.weight", C, C);
  w.conv3_b = b.vec(at + "conv2d3.bias", C);
  w.conv_out_w = b.mat(at + "conv_out.weight", d, conv_out_in);

  w.enc_layers.resize(static_cast<size_t>(ac.encoder_layers));
  for (int i = 0; i < ac.encoder_layers; ++i) {
    EncoderLayerWeights& L = w.enc_layers[static_cast<size_t>(i)];
    const std::string p = at + "layers." + std::to_string(i) + ".";
    L.q_w = b.mat(p + "self_attn.q_proj.weight", d, d);
    L.q_b = b.vec(p + "self_attn.q_proj.bias", d);
    L.k_w = b.mat(p + "self_attn.k_proj.weight", d, d);
    L.k_b = b.vec(p + "self_attn.k_proj.bias", d);
    L.v_w = b.mat(p + "self_attn.v_proj.weight", d, d);
    L.v_b = b.vec(p + "self_attn.v_proj.bias", d);
    L.o_w = b.mat(p + "self_attn.out_proj.weight", d, d);
    L.o_b = b.vec(p + "self_attn.out_proj.bias", d);
    L.attn_ln_w = b.vec(p + "self_attn_layer_norm.weight", d);
    L.attn_ln_b = b.vec(p + "self_attn_layer_norm.bias", d);
    L.ffn_ln_w = b.vec(p + "final_layer_norm.weight", d);
    L.ffn_ln_b = b.vec(p + "final_layer_norm.bias", d);
    L.fc1_w = b.mat(p + "fc1.weight", ffn, d);
    L.fc1_b = b.vec(p + "fc1.bias", ffn);
    L.fc2_w = b.mat(p + "fc2.weight", d, ffn);
    L.fc2_b = b.vec(p + "fc2.bias", d);
  }
  w.ln_post_w = b.vec(at + "ln_post.weight", d);
  w.ln_post_b = b.vec(at + "ln_post.bias", d);
  w.proj1_w = b.mat(at + "proj1.weight", d, d);
  w.proj1_b = b.vec(at + "proj1.bias", d);
  w.proj2_w = b.mat(at + "proj2.weight", out_dim, d);
  w.proj2_b = b.vec(at + "proj2.bias", out_dim);

  // ---- text decoder
  const TextConfig& tc = config.text;
  const int64_t hidden = tc.hidden_size;
  const int64_t vocab = tc.vocab_size;
  const int64_t q_dim = static_cast<int64_t>(tc.num_attention_heads) * tc.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(tc.num_key_value_heads) * tc.head_dim;
  const int64_t inter = tc.intermediate_size;
  const std::string mp = "thinker.model.";

  w.embed_tokens = b.mat(mp + "embed_tokens.weight", vocab, hidden);
  w.dec_layers.resize(static_cast<size_t>(tc.num_hidden_layers));
  for (int i = 0; i < tc.num_hidden_layers; ++i) {
    DecoderLayerWeights& L = w.dec_layers[static_cast<size_t>(i)];
    const std::string p = mp + "layers." + std::to_string(i) + ".";
    L.in_norm = b.vec(p + "input_layernorm.weight", hidden);
    L.q_w = b.mat(p + "self_attn.q_proj.weight", q_dim, hidden);
    L.k_w = b.mat(p + "self_attn.k_proj.weight", kv_dim, hidden);
    L.v_w = b.mat(p + "self_attn.v_proj.weight", kv_dim, hidden);
    L.o_w = b.mat(p + "self_attn.o_proj.weight", hidden, q_dim);
    L.q_norm = b.vec(p + "self_attn.q_norm.weight", tc.head_dim);
    L.k_norm = b.vec(p + "self_attn.k_norm.weight", tc.head_dim);
    L.post_norm = b.vec(p + "post_attention_layernorm.weight", hidden);
    L.gate_w = b.mat(p + "mlp.gate_proj.weight", inter, hidden);
    L.up_w = b.mat(p + "mlp.up_proj.weight", inter, hidden);
    L.down_w = b.mat(p + "mlp.down_proj.weight", hidden, inter);
  }
  w.final_norm = b.vec(mp + "norm.weight", hidden);

  // lm_head: required when untied; when tied, a present lm_head is validated and used, else alias embeddings.
  // A forced aligner's head is a classifier of its own ([classify_num, hidden]), never tied.
  const std::string lm = "thinker.lm_head.weight";
  if (config.kind == ModelKind::kForcedAligner) {
    w.lm_head = b.mat(lm, config.aligner.classify_num, hidden);
  } else if (!tc.tie_word_embeddings || b.has(lm)) {
    w.lm_head = b.mat(lm, vocab, hidden);
  } else {
    w.lm_head = w.embed_tokens;
  }

  w.archives = src.archives();
  return w;
}

}  // namespace rustasr
