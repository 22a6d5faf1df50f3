#include "weights.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <thread>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

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
  const std::string lm = "thinker.lm_head.weight";
  if (!tc.tie_word_embeddings || b.has(lm)) {
    w.lm_head = b.mat(lm, vocab, hidden);
  } else {
    w.lm_head = w.embed_tokens;
  }

  w.archives = src.archives();
  return w;
}

// ------------------------------------------------------------------------------------------------
// int8 quantisation at load.

namespace {

int64_t int8_group(int64_t cols) {
  for (int64_t g : {128, 64, 32})
    if (cols % g == 0) return g;
  return cols;
}

// Drops the pages of a mapped tensor from the process (they are re-read from the file if touched again).
// Only whole pages inside the tensor are released, and only when `w` points into a file mapping (an
// aligned copy of a misaligned tensor lives in anonymous memory, where MADV_DONTNEED would zero it).
void release_source(const ModelWeights& mw, const Weight& w) {
  const TensorInfo* info = nullptr;
  for (const auto& a : mw.archives)
    if ((info = a->find(w.name)) != nullptr) break;
  if (!info || static_cast<const void*>(info->data) != w.data) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(info->data);
  const uintptr_t e = b + info->nbytes;
  const uintptr_t pb = (b + page - 1) & ~(page - 1), pe = e & ~(page - 1);
  if (pe > pb) ::madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_DONTNEED);
}

// Maps a mapped tensor's pages in one call before it is read whole (MADV_POPULATE_READ, Linux 5.14+;
// elsewhere, or if refused, the reads fault the pages in as usual).
void prefault_source(const ModelWeights& mw, const Weight& w) {
#if defined(__linux__)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  const TensorInfo* info = nullptr;
  for (const auto& a : mw.archives)
    if ((info = a->find(w.name)) != nullptr) break;
  if (!info || static_cast<const void*>(info->data) != w.data) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(info->data) & ~(page - 1);
  const uintptr_t e = reinterpret_cast<uintptr_t>(info->data) + info->nbytes;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_READ);
#else
  (void)mw;
  (void)w;
#endif
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define RUSTASR_QUANT_X86 1
// BF16 rows, group a multiple of 16, AVX-512: the same arithmetic as the portable loop below (|w| max,
// scale = max / 127, q = round-to-nearest-even(w * (127 / max))).
__attribute__((target("avx512f,avx512bw,avx512vl"))) void quantize_rows_bf16_avx512(
    const Weight& src, int64_t group, int64_t r0, int64_t r1, int8_t* q, float* scales) {
  const int64_t cols = src.cols, gpr = cols / group;
  const uint16_t* W = static_cast<const uint16_t*>(src.data);
  const __mmask16 all = static_cast<__mmask16>(0xFFFF);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t g = 0; g < gpr; ++g) {
      const uint16_t* v = W + r * cols + g * group;
      __m512 mx = _mm512_setzero_ps();
      for (int64_t i = 0; i < group; i += 16) {
        const __m512i u = _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
        // |w|: drop the sign bit along with the shift into the float32 position.
        const __m512 a = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_and_epi32(all, u, _mm512_set1_epi32(0x7FFF)), 16));
        mx = _mm512_maskz_max_ps(all, mx, a);
      }
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, mx);
      float m = 0.f;
      for (float l : lanes) m = std::max(m, l);
      const float inv = m > 0.f ? 127.f / m : 0.f;
      scales[r * gpr + g] = m / 127.f;
      const __m512 iv = _mm512_set1_ps(inv);
      int8_t* out = q + r * cols + g * group;
      for (int64_t i = 0; i < group; i += 16) {
        const __m512 w = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
            all, _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i))), 16));
        const __m512i t = _mm512_maskz_cvtps_epi32(all, _mm512_mul_ps(w, iv));  // MXCSR: nearest-even
        _mm512_mask_cvtsepi32_storeu_epi8(out + i, all, t);
      }
    }
  }
}
#endif

// Quantises rows [r0, r1) of `src` (any float dtype) into q / scales.
void quantize_rows(const Weight& src, int64_t group, int64_t r0, int64_t r1, int8_t* q, float* scales) {
#if defined(RUSTASR_QUANT_X86)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  if (avx512 && src.dtype == DType::kBF16 && group % 16 == 0)
    return quantize_rows_bf16_avx512(src, group, r0, r1, q, scales);
#endif
  const int64_t cols = src.cols, gpr = cols / group;
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    weight_to_f32(src, r * cols, cols, row.data());
    for (int64_t g = 0; g < gpr; ++g) {
      const float* v = row.data() + g * group;
      float mx = 0.f;
      for (int64_t i = 0; i < group; ++i) mx = std::max(mx, std::fabs(v[i]));
      const float scale = mx / 127.f;
      const float inv = mx > 0.f ? 127.f / mx : 0.f;
      scales[r * gpr + g] = scale;
      int8_t* out = q + r * cols + g * group;
      // |v * inv| <= 127: adding and subtracting 1.5 * 2^23 rounds to nearest-even without a libm call.
      constexpr float kRound = 12582912.0f;
      for (int64_t i = 0; i < group; ++i) {
        float t = (v[i] * inv + kRound) - kRound;
        t = t > 127.f ? 127.f : (t < -127.f ? -127.f : t);
        out[i] = static_cast<int8_t>(static_cast<int>(t));
      }
    }
  }
}

}  // namespace

void quantize_decoder_int8(ModelWeights& w, int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, threads);
  std::vector<Weight*> targets;
  for (DecoderLayerWeights& L : w.dec_layers)
    for (Weight* p : {&L.q_w, &L.k_w, &L.v_w, &L.o_w, &L.gate_w, &L.up_w, &L.down_w}) targets.push_back(p);
  targets.push_back(&w.lm_head);
  for (Weight* t : targets) {
    const Weight src = *t;
    if (src.dtype == DType::kI8 || src.rows <= 0 || src.cols <= 0) continue;
    const int64_t group = int8_group(src.cols);
    prefault_source(w, src);
    auto q = std::shared_ptr<int8_t>(new int8_t[static_cast<size_t>(src.rows * src.cols)], std::default_delete<int8_t[]>());
    auto sc = std::shared_ptr<float>(new float[static_cast<size_t>(src.rows * (src.cols / group))],
                                     std::default_delete<float[]>());
    // Rows in blocks handed out dynamically over the workers.
    const int64_t block = 64;
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (;;) {
        const int64_t r0 = next.fetch_add(block);
        if (r0 >= src.rows) break;
        quantize_rows(src, group, r0, std::min(src.rows, r0 + block), q.get(), sc.get());
      }
    };
    const int nt = static_cast<int>(std::min<int64_t>(threads, (src.rows + block - 1) / block));
    std::vector<std::thread> pool;
    for (int i = 1; i < nt; ++i) pool.emplace_back(work);
    work();
    for (std::thread& th : pool) th.join();
    Weight out = src;
    out.data = q.get();
    out.dtype = DType::kI8;
    out.scales = sc.get();
    out.group = group;
    w.owned.push_back(q);
    w.owned.push_back(sc);
    // Every other view of the same tensor (a tied lm_head shares embed_tokens' bytes) keeps its source.
    *t = out;
    const bool shared = src.data == w.embed_tokens.data;
    if (!shared) release_source(w, src);
  }
  // The tied embedding table was read whole for lm_head: drop it too (lookups fault in single rows).
  if (w.lm_head.dtype == DType::kI8) release_source(w, w.embed_tokens);
}

}  // namespace rustasr
