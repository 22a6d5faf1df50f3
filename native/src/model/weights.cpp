#include "weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "../io/large_pages.h"
#include "../io/safetensors.h"
#include "model.h"
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
  tune_allocator();
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

// ------------------------------------------------------------------------------------------------
// int8 quantisation at load.

namespace {

int64_t int8_group(int64_t cols) {
  for (int64_t g : {128, 64, 32, 16})
    if (cols % g == 0) return g;
  return cols;
}

// int4: blocks of 32 columns (else 16); 0 when the row cannot be split so (that tensor is quantised as int8).
int64_t int4_group(int64_t cols) {
  for (int64_t g : {32, 16})
    if (cols % g == 0) return g;
  return 0;
}

size_t weight_bytes(const Weight& w) {
  return static_cast<size_t>(w.rows) * static_cast<size_t>(weight_row_bytes(w));
}

// Drops the pages of a mapped tensor from the process (they are re-read from the file if touched again).
// Only whole pages inside the file mapping are released: an aligned copy of a misaligned tensor lives in
// anonymous memory, which the archive leaves alone (MADV_DONTNEED would zero it).
void release_source(const ModelWeights& mw, const Weight& w) {
  for (const auto& a : mw.archives)
    if (a->release(w.data, weight_bytes(w))) return;
}

// Maps a mapped tensor's pages in one call before it is read whole (see SafetensorsArchive::populate).
void prefault_source(const ModelWeights& mw, const Weight& w) {
  for (const auto& a : mw.archives)
    if (a->populate(w.data, weight_bytes(w))) return;
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

// Quantises rows [r0, r1) of `src` into int4 blocks of `group` columns (DType::kI4 layout, tensor.h), q in
// -7 .. 7 stored as q + 8. With 15 levels the plain scale max|w| / 7 wastes much of the range on one outlier:
// the scale is the one of a few candidates (max|w| / 7 times 1, 0.95, ..., 0.7) whose rounding has the least
// squared error, then refitted by least squares for the q it chose (scale = sum w q / sum q^2).
void quantize_rows_i4(const Weight& src, int64_t group, int64_t r0, int64_t r1, uint8_t* q, float* scales) {
  const int64_t cols = src.cols, gpr = cols / group, half = group / 2;
  std::vector<float> row(static_cast<size_t>(cols));
  int8_t qv[32], best[32];
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: rounds to nearest-even without a libm call
  for (int64_t r = r0; r < r1; ++r) {
    weight_to_f32(src, r * cols, cols, row.data());
    for (int64_t g = 0; g < gpr; ++g) {
      const float* v = row.data() + g * group;
      float mx = 0.f;
      for (int64_t i = 0; i < group; ++i) mx = std::max(mx, std::fabs(v[i]));
      float scale = 0.f;
      std::memset(best, 0, sizeof best);
      if (mx > 0.f) {
        double best_err = -1;
        for (int a = 0; a <= 6; ++a) {
          const float s = mx / 7.f * (1.f - 0.05f * static_cast<float>(a));
          const float inv = 1.f / s;
          double err = 0, wq = 0, qq = 0;
          for (int64_t i = 0; i < group; ++i) {
            float t = (v[i] * inv + kRound) - kRound;
            t = t > 7.f ? 7.f : (t < -7.f ? -7.f : t);
            qv[i] = static_cast<int8_t>(t);
            wq += static_cast<double>(v[i]) * t;
            qq += static_cast<double>(t) * t;
          }
          // The least-squares scale for these q, and its error.
          const double fit = qq > 0 ? wq / qq : 0;
          for (int64_t i = 0; i < group; ++i) {
            const double d = v[i] - fit * qv[i];
            err += d * d;
          }
          if (best_err < 0 || err < best_err) {
            best_err = err;
            scale = static_cast<float>(fit);
            std::copy(qv, qv + group, best);
          }
        }
      }
      scales[r * gpr + g] = scale;
      uint8_t* out = q + r * (cols / 2) + g * half;
      for (int64_t j = 0; j < half; ++j)
        out[j] = static_cast<uint8_t>((best[j] + 8) | ((best[half + j] + 8) << 4));
    }
  }
}

}  // namespace

namespace {

// The weights int8 / int4 replace, in a fixed order (the order of the cache file's tensors).
std::vector<Weight*> int8_targets(ModelWeights& w) {
  std::vector<Weight*> targets;
  for (DecoderLayerWeights& L : w.dec_layers)
    for (Weight* p : {&L.q_w, &L.k_w, &L.v_w, &L.o_w, &L.gate_w, &L.up_w, &L.down_w}) targets.push_back(p);
  targets.push_back(&w.lm_head);
  return targets;
}

}  // namespace

namespace {
// The dtype and group a target of `bits` quantisation gets (int4 needs rows of whole 16-column blocks; a
// tensor without them is int8).
DType quant_dtype(const Weight& src, int bits) {
  return bits == 4 && int4_group(src.cols) > 0 ? DType::kI4 : DType::kI8;
}
int64_t quant_group(const Weight& src, DType dt) { return dt == DType::kI4 ? int4_group(src.cols) : int8_group(src.cols); }
}  // namespace

void quantize_decoder(ModelWeights& w, int threads, int bits) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, threads);
  for (Weight* t : int8_targets(w)) {
    const Weight src = *t;
    if (src.dtype == DType::kI8 || src.dtype == DType::kI4 || src.rows <= 0 || src.cols <= 0) continue;
    const DType dt = quant_dtype(src, bits);
    const int64_t group = quant_group(src, dt);
    prefault_source(w, src);
    const size_t qbytes = static_cast<size_t>(src.rows) * static_cast<size_t>(dt == DType::kI4 ? src.cols / 2 : src.cols);
    auto q = std::shared_ptr<uint8_t>(new uint8_t[qbytes], std::default_delete<uint8_t[]>());
    auto sc = std::shared_ptr<float>(new float[static_cast<size_t>(src.rows * (src.cols / group))],
                                     std::default_delete<float[]>());
    // Rows in blocks handed out dynamically over the workers.
    const int64_t block = 64;
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (;;) {
        const int64_t r0 = next.fetch_add(block);
        if (r0 >= src.rows) break;
        const int64_t r1 = std::min(src.rows, r0 + block);
        if (dt == DType::kI4)
          quantize_rows_i4(src, group, r0, r1, q.get(), sc.get());
        else
          quantize_rows(src, group, r0, r1, reinterpret_cast<int8_t*>(q.get()), sc.get());
      }
    };
    const int nt = static_cast<int>(std::min<int64_t>(threads, (src.rows + block - 1) / block));
    std::vector<std::thread> pool;
    for (int i = 1; i < nt; ++i) pool.emplace_back(work);
    work();
    for (std::thread& th : pool) th.join();
    Weight out = src;
    out.data = q.get();
    out.dtype = dt;
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
  if (w.lm_head.dtype == DType::kI8 || w.lm_head.dtype == DType::kI4) release_source(w, w.embed_tokens);
}

void quantize_decoder_int8(ModelWeights& w, int threads) { quantize_decoder(w, threads, 8); }

// ------------------------------------------------------------------------------------------------
// The on-disk int8 cache.
//
// File layout (little-endian), format version 1:
//   [0, 64)          preamble: magic "RSASRQ8\n", u32 version, u32 0x01020304 (byte order), u64 file size,
//                    u64 meta size, u64 FNV-1a 64 of the meta, u64 data offset, 16 zero bytes
//   [64, 64 + meta)  meta (text): the checkpoint's descriptor (format, quantisation rule, model directory,
//                    each safetensors file's name, size, mtime and header hash), then one line per tensor:
//                    name, source dtype, rows, cols, group, offsets of the int8 data and of the scales
//                    (relative to the data offset)
//   [data offset..)  per tensor: rows * cols int8, then rows * (cols / group) float32 scales, each on a
//                    64-byte boundary; the data offset is a multiple of 4096.
// The meta the checkpoint implies is computed before the file is opened and must equal the file's byte for
// byte, along with the preamble and the file size, so a stale, foreign, truncated or damaged header is
// rebuilt, never trusted.

namespace {

constexpr char kCacheMagic[8] = {'R', 'S', 'A', 'S', 'R', 'Q', '8', '\n'};
constexpr uint32_t kCacheVersion = 1;
constexpr uint32_t kByteOrder = 0x01020304u;
constexpr uint64_t kPreambleBytes = 64;

struct Preamble {
  char magic[8];
  uint32_t version;
  uint32_t byte_order;
  uint64_t file_size;
  uint64_t meta_size;
  uint64_t meta_hash;
  uint64_t data_offset;
  uint64_t reserved[2];
};
static_assert(sizeof(Preamble) == kPreambleBytes, "int8 cache preamble is 64 bytes");

uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string real_path(const std::string& p) {
  char* r = ::realpath(p.c_str(), nullptr);
  if (!r) return p;
  std::string s(r);
  std::free(r);
  return s;
}

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string expand_home(const std::string& p) {
  const std::string home = env_str("HOME");
  if (!home.empty() && (p == "~" || p.rfind("~/", 0) == 0)) return home + p.substr(1);
  return p;
}

struct CacheEntry {
  Weight* w;
  DType dtype;  // kI8 or kI4
  int64_t group;
  uint64_t q_off, s_off;  // relative to the data offset
  uint64_t q_bytes() const {
    return static_cast<uint64_t>(w->rows) * static_cast<uint64_t>(dtype == DType::kI4 ? w->cols / 2 : w->cols);
  }
};

struct CachePlan {
  std::string meta;
  uint64_t data_offset = 0, file_size = 0;
  std::vector<CacheEntry> entries;
};

CachePlan plan_cache(ModelWeights& w, const std::string& model_dir, int bits) {
  CachePlan plan;
  std::string& m = plan.meta;
  if (bits == 4) {
    m = "rustasr int4 cache v1\n";
    m += "quant symmetric int4 (q + 8 nibbles, blocks of 32 else 16 columns, low nibbles the first half), scale "
         "least-squares fit of the best of max|w|/7 x (1, 0.95 .. 0.7); rows without such blocks int8\n";
  } else {
    m = "rustasr int8 cache v1\n";
    m += "quant symmetric int8, scale max|w|/127 per group of 128 (else 64, 32, 16, the row) columns\n";
  }
  // The quantiser's float rounding may differ between architectures (FMA contraction): a cache is only
  // reused by the architecture that wrote it (a home directory shared by x86-64 and arm64 machines).
#if defined(__x86_64__) || defined(_M_X64)
  m += "arch x86_64\n";
#elif defined(__aarch64__)
  m += "arch aarch64\n";
#else
  m += "arch other\n";
#endif
  m += "dir " + real_path(model_dir) + "\n";
  for (const auto& a : w.archives) {
    const std::string& path = a->path();
    const size_t slash = path.find_last_of('/');
    m += "file " + (slash == std::string::npos ? path : path.substr(slash + 1)) + " size " +
         std::to_string(a->file_size()) + " mtime_ns " + std::to_string(a->mtime_ns()) + " header_fnv1a " +
         hex64(fnv1a(a->header_bytes(), a->header_size())) + "\n";
  }
  uint64_t off = 0;
  for (Weight* t : int8_targets(w)) {
    if (t->rows <= 0 || t->cols <= 0) continue;
    const DType dt = quant_dtype(*t, bits);
    CacheEntry e{t, dt, quant_group(*t, dt), 0, 0};
    e.q_off = off;
    off = align_up(off + e.q_bytes(), 64);
    e.s_off = off;
    off += static_cast<uint64_t>(t->rows) * static_cast<uint64_t>(t->cols / e.group) * sizeof(float);
    m += "tensor " + t->name + " " + dtype_name(t->dtype) + " " + std::to_string(t->rows) + " " +
         std::to_string(t->cols) + " " + (bits == 4 ? std::string(dtype_name(dt)) + " " : std::string()) +
         std::to_string(e.group) + " " + std::to_string(e.q_off) + " " + std::to_string(e.s_off) + "\n";
    plan.entries.push_back(e);
    off = align_up(off, 64);
  }
  plan.data_offset = align_up(kPreambleBytes + m.size(), 4096);
  plan.file_size = plan.data_offset + off;
  return plan;
}

Preamble make_preamble(const CachePlan& plan) {
  Preamble p;
  std::memset(&p, 0, sizeof p);
  std::memcpy(p.magic, kCacheMagic, sizeof p.magic);
  p.version = kCacheVersion;
  p.byte_order = kByteOrder;
  p.file_size = plan.file_size;
  p.meta_size = plan.meta.size();
  p.meta_hash = fnv1a(plan.meta.data(), plan.meta.size());
  p.data_offset = plan.data_offset;
  return p;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Maps `path` and points the plan's weights at its int8 data when the file is exactly what the plan
// implies; false (nothing changed) otherwise.
bool map_cache(ModelWeights& w, const CachePlan& plan, const std::string& path) {
  Fd f;
  // Never a FIFO (O_NONBLOCK: the open cannot block; fstat below refuses it) nor a symlink planted in the
  // cache (O_NOFOLLOW): either is treated as a stale entry, replaced by the rename of a fresh file.
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY);
  if (f.fd < 0) return false;
  struct stat st;
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != plan.file_size)
    return false;
  const Preamble want = make_preamble(plan);
  Preamble got;
  if (::pread(f.fd, &got, sizeof got, 0) != static_cast<ssize_t>(sizeof got) || std::memcmp(&got, &want, sizeof got) != 0)
    return false;
  void* m = map_file_readonly(f.fd, static_cast<size_t>(plan.file_size));
  if (m == MAP_FAILED) return false;
  const size_t size = static_cast<size_t>(plan.file_size);
  std::shared_ptr<void> mapping(m, [size](void* p) { ::munmap(p, size); });
  const char* base = static_cast<const char*>(m);
  if (std::memcmp(base + kPreambleBytes, plan.meta.data(), plan.meta.size()) != 0) return false;
  const char* data = base + plan.data_offset;
  for (const CacheEntry& e : plan.entries) {
    Weight out = *e.w;
    out.data = data + e.q_off;
    out.dtype = e.dtype;
    out.scales = reinterpret_cast<const float*>(data + e.s_off);
    out.group = e.group;
    *e.w = out;
  }
  w.owned.push_back(std::move(mapping));
  w.int8_map_base = base;
  w.int8_map_size = size;
  return true;
}

bool make_dirs(const std::string& dir) {
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i < dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  // The last component (the cache's int8/ directory) must be a real directory, not a symlink planted to
  // make the cache write elsewhere; the root itself may be a link the user set up.
  struct stat st;
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool write_all(int fd, const void* p, uint64_t n, uint64_t off) {
  const char* b = static_cast<const char*>(p);
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    const ssize_t r = ::pwrite(fd, b, chunk, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) return false;
    b += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<uint64_t>(r);
  }
  return true;
}

// Writes the plan's (already quantised) weights to `path` atomically: a temporary file in the same
// directory, flushed to disk, then renamed over `path`. False (and no file left behind) on any failure.
bool write_cache(const CachePlan& plan, const std::string& dir, const std::string& path) {
  for (const CacheEntry& e : plan.entries)
    if (e.w->dtype != e.dtype || e.w->group != e.group || !e.w->scales) return false;
  if (!make_dirs(dir)) return false;
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const Preamble pre = make_preamble(plan);
  bool ok = write_all(fd, &pre, sizeof pre, 0) && write_all(fd, plan.meta.data(), plan.meta.size(), kPreambleBytes);
  for (const CacheEntry& e : plan.entries) {
    if (!ok) break;
    ok = write_all(fd, e.w->data, e.q_bytes(), plan.data_offset + e.q_off) &&
         write_all(fd, e.w->scales, static_cast<uint64_t>(e.w->rows) * (e.w->cols / e.group) * sizeof(float),
                   plan.data_offset + e.s_off);
  }
#if defined(__APPLE__)
  ok = ok && ::ftruncate(fd, static_cast<off_t>(plan.file_size)) == 0 && ::fsync(fd) == 0;
#else
  ok = ok && ::ftruncate(fd, static_cast<off_t>(plan.file_size)) == 0 && ::fdatasync(fd) == 0;
#endif
  // The pages just written sit in the page cache in small folios; dropped, the mapping made next reads
  // them back in 2 MiB folios where the file system can (io/large_pages.h).
  if (ok) drop_file_cache(fd, false);
  ok = (::close(fd) == 0) && ok;
  if (ok) ok = ::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    ::unlink(tmp.c_str());
    return false;
  }
  // Make the rename itself durable (best effort).
  int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return true;
}

}  // namespace

std::string default_cache_root() {
  const std::string explicit_dir = env_str("RUSTASR_CACHE_DIR");
  if (!explicit_dir.empty()) return expand_home(explicit_dir);
  const std::string xdg = env_str("XDG_CACHE_HOME");
  if (!xdg.empty()) return expand_home(xdg) + "/rustasr";
  const std::string home = env_str("HOME");
  if (!home.empty()) return home + "/.cache/rustasr";
  return "";
}

void make_decoder_int8(ModelWeights& w, int threads, const std::string& model_dir, const Int8CacheOptions& cache) {
  make_decoder_quant(w, threads, model_dir, cache, 8);
}

void make_decoder_quant(ModelWeights& w, int threads, const std::string& model_dir, const Int8CacheOptions& cache,
                        int bits) {
  w.int8_cache = "off";
  w.int8_cache_path.clear();
  w.int8_mapped = false;
  if (!cache.enabled) {
    quantize_decoder(w, threads, bits);
    return;
  }
  const std::string root = cache.dir.empty() ? default_cache_root() : expand_home(cache.dir);
  const CachePlan plan = plan_cache(w, model_dir, bits);
  const std::string dir = root + "/int8";
  // One file per model directory and format version: the meta up to the first file line.
  const size_t key_len = std::min(plan.meta.size(), plan.meta.find("\nfile "));
  const std::string path = dir + "/" + hex64(fnv1a(plan.meta.data(), key_len)) + ".rq8";
  if (!root.empty() && map_cache(w, plan, path)) {
    w.int8_cache = "hit";
    w.int8_cache_path = path;
    w.int8_mapped = true;
    return;
  }
  const size_t owned_before = w.owned.size();
  quantize_decoder(w, threads, bits);
  if (root.empty() || !write_cache(plan, dir, path)) {
    w.int8_cache = "unwritable";
    return;
  }
  w.int8_cache_path = path;
  w.int8_cache = "miss";
  // Serve the weights from the file just written (file-backed pages, shared with other processes and not
  // resident until read) and free the quantised buffers; if that fails, keep the buffers.
  if (map_cache(w, plan, path)) {
    w.owned.erase(w.owned.begin() + static_cast<std::ptrdiff_t>(owned_before), w.owned.end() - 1);
    w.int8_mapped = true;
  }
}

void tune_allocator() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("GLIBC_TUNABLES")) return;
    ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  });
#endif
}

std::string int8_cache_state(const Model& model) { return model.weights().int8_cache; }

namespace {

// The byte ranges of a stage's weights that lie in a file mapping (a checkpoint archive's, or the int8
// cache's), merged where they are contiguous (gaps under 64 KiB) inside one mapping, so that a stage is a
// few long ranges. Never across mappings: the gap between two could hold anonymous memory, which a release
// (MADV_DONTNEED) would zero.
struct Range {
  uintptr_t b, e;
  uintptr_t map;  // the mapping's base
};

void add_range(std::vector<Range>& out, const void* p, size_t n, const void* base, size_t size) {
  const uintptr_t mb = reinterpret_cast<uintptr_t>(base), me = mb + size;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p), e = b + n;
  if (!p || n == 0 || b < mb || e > me) return;
  out.push_back(Range{b, e, mb});
}

void add_weight(const ModelWeights& w, const Weight& x, std::vector<Range>& out) {
  if (x.empty()) return;
  if (x.dtype == DType::kI8 || x.dtype == DType::kI4) {
    if (!w.int8_mapped) return;
    const size_t n = static_cast<size_t>(x.rows) * static_cast<size_t>(x.cols);
    add_range(out, x.data, weight_bytes(x), w.int8_map_base, w.int8_map_size);
    add_range(out, x.scales, n / static_cast<size_t>(x.group) * sizeof(float), w.int8_map_base, w.int8_map_size);
    return;
  }
  for (const auto& a : w.archives) {
    const size_t before = out.size();
    add_range(out, x.data, weight_bytes(x), a->map_base(), a->file_size());
    if (out.size() != before) return;
  }
}

std::vector<Range> merge(std::vector<Range> r) {
  std::sort(r.begin(), r.end(), [](const Range& a, const Range& b) { return a.b < b.b; });
  std::vector<Range> out;
  for (const Range& x : r) {
    if (!out.empty() && x.map == out.back().map && x.b <= out.back().e + (uintptr_t(64) << 10))
      out.back().e = std::max(out.back().e, x.e);
    else
      out.push_back(x);
  }
  return out;
}

// release: drops the whole 2 MiB stretches inside each range (a stretch shared with the other stage stays:
// dropping part of a 2 MiB page would split its mapping into 4 KiB entries for good); populate: maps every
// page touching each range, in one call per range.
size_t stage_op(const std::vector<Range>& ranges, bool release) {
  constexpr uintptr_t kLarge = kLargePageBytes;
  size_t n = 0;
  for (const Range& r : merge(ranges)) {
    if (release) {
      const uintptr_t b = (r.b + kLarge - 1) & ~(kLarge - 1), e = r.e & ~(kLarge - 1);
      if (e > b) n += release_pages(reinterpret_cast<const void*>(b), e - b);
    } else {
      n += populate_pages(reinterpret_cast<const void*>(r.b), r.e - r.b);
    }
  }
  return n;
}

size_t encoder_op(const ModelWeights& w, bool release) {
  std::vector<Range> r;
  for (const Weight* x : {&w.conv1_w, &w.conv1_b, &w.conv2_w, &w.conv2_b, &w.conv3_w, &w.conv3_b, &w.conv_out_w,
                          &w.ln_post_w, &w.ln_post_b, &w.proj1_w, &w.proj1_b, &w.proj2_w, &w.proj2_b})
    add_weight(w, *x, r);
  for (const EncoderLayerWeights& L : w.enc_layers)
    for (const Weight* x : {&L.attn_ln_w, &L.attn_ln_b, &L.q_w, &L.q_b, &L.k_w, &L.k_b, &L.v_w, &L.v_b, &L.o_w,
                            &L.o_b, &L.ffn_ln_w, &L.ffn_ln_b, &L.fc1_w, &L.fc1_b, &L.fc2_w, &L.fc2_b})
      add_weight(w, *x, r);
  return stage_op(r, release);
}

// The decoder's weights; the embedding table only when it is read whole (as a BF16 tied lm_head): as a
// lookup table it is read a few rows per token, and populating it would map it all.
size_t decoder_op(const ModelWeights& w, bool release) {
  std::vector<Range> r;
  add_weight(w, w.final_norm, r);
  add_weight(w, w.lm_head, r);
  if (w.lm_head.data != w.embed_tokens.data && release) add_weight(w, w.embed_tokens, r);
  for (const DecoderLayerWeights& L : w.dec_layers)
    for (const Weight* x : {&L.in_norm, &L.q_w, &L.k_w, &L.v_w, &L.o_w, &L.q_norm, &L.k_norm, &L.post_norm,
                            &L.gate_w, &L.up_w, &L.down_w})
      add_weight(w, *x, r);
  return stage_op(r, release);
}

}  // namespace

void prepare_weight_pages(ModelWeights& w, bool int8_file) {
  // The least favourable state wins: a file in 4 KiB pages says more than one in 2 MiB pages.
  static const char* const kOrder[] = {"unsupported", "unknown", "reread", "uncached", "large", "off"};
  auto rank = [](const std::string& s) {
    for (int i = 0; i < 6; ++i)
      if (s == kOrder[i]) return i;
    return 5;
  };
  auto note = [&](const LargePageReport& r) {
    if (r.state == "off") return;
    if (w.large_pages == "off" || rank(r.state) < rank(w.large_pages)) w.large_pages = r.state;
  };
  if (int8_file) {
    if (w.int8_mapped) note(prepare_large_pages(w.int8_map_base, w.int8_map_size, w.int8_cache_path));
    return;
  }
  for (const auto& a : w.archives) note(prepare_large_pages(a->map_base(), a->file_size(), a->path()));
}

void keep_lookups_in_small_pages(ModelWeights& w, bool int8) {
  if (int8) {
    // The decoder norms sit between BF16 matrices that int8 never reads again; mapping a few KiB of norm
    // maps the 2 MiB page around it (~100 MB for 0.6B). Copies of them (~130 KiB) are read instead.
    std::vector<Weight*> norms{&w.final_norm};
    for (DecoderLayerWeights& L : w.dec_layers)
      for (Weight* x : {&L.in_norm, &L.q_norm, &L.k_norm, &L.post_norm}) norms.push_back(x);
    for (Weight* x : norms) {
      if (x->empty() || x->dtype == DType::kI8 || x->dtype == DType::kI4) continue;
      const size_t n = weight_bytes(*x);
      std::shared_ptr<uint64_t> copy(new uint64_t[(n + 7) / 8], std::default_delete<uint64_t[]>());
      std::memcpy(copy.get(), x->data, n);
      // Reading it mapped the 2 MiB page around it: drop that again.
      constexpr uintptr_t kLarge = kLargePageBytes;
      const uintptr_t b = reinterpret_cast<uintptr_t>(x->data) & ~(kLarge - 1);
      for (const auto& a : w.archives) a->release(reinterpret_cast<const void*>(b), 2 * kLarge);
      x->data = copy.get();
      w.owned.push_back(std::shared_ptr<void>(copy, copy.get()));
    }
  }
  if (w.embed_tokens.data != w.lm_head.data || int8) {
    // A lookup table of its own (with int8, lm_head is the int8 copy): rows mapped in 4 KiB pages.
    std::vector<Range> r;
    add_weight(w, w.embed_tokens, r);
    for (const Range& x : merge(r)) advise_small_pages(reinterpret_cast<const void*>(x.b), x.e - x.b);
  }
}

size_t release_encoder_pages(const ModelWeights& w) { return encoder_op(w, true); }
size_t release_decoder_pages(const ModelWeights& w) { return decoder_op(w, true); }
size_t populate_encoder_pages(const ModelWeights& w) { return encoder_op(w, false); }
size_t populate_decoder_pages(const ModelWeights& w) { return decoder_op(w, false); }

}  // namespace rustasr
