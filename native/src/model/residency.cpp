// Which weights are resident, and in which pages: stage residency (lowMemory), 2 MiB pages for the mapped
// files, and the process allocator policy for large buffers.
#include "residency.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "../io/large_pages.h"
#include "../io/safetensors.h"
#include "model.h"

namespace rustasr {

void tune_allocator() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("GLIBC_TUNABLES")) return;
    ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  });
#endif
}

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

StageResidency::StageResidency(const Model& m, bool alone) : w_(m.weights()), on_(m.low_memory() && alone) {}

void StageResidency::before_encode() {
  if (!on_) return;
  release_decoder_pages(w_);
  populate_encoder_pages(w_);
}

void StageResidency::after_encode(bool still_alone) {
  if (!on_ || !still_alone) return;
  release_encoder_pages(w_);
  populate_decoder_pages(w_);
}

}  // namespace rustasr
