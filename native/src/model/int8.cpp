// int8 decoder weights at load: quantised by the CPU quantiser (backend/cpu/quantize.h), or mapped from the
// on-disk cache (io/int8_cache.h) when a valid file for the checkpoint is there.
#include "int8.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "../backend/cpu/quantize.h"
#include "../io/int8_cache.h"
#include "../io/safetensors.h"

namespace rustasr {

namespace {

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

// The weights int8 replaces, in a fixed order (the order of the cache file's tensors).
std::vector<Weight*> int8_targets(ModelWeights& w) {
  std::vector<Weight*> targets;
  for (DecoderLayerWeights& L : w.dec_layers)
    for (Weight* p : {&L.q_w, &L.k_w, &L.v_w, &L.o_w, &L.gate_w, &L.up_w, &L.down_w}) targets.push_back(p);
  targets.push_back(&w.lm_head);
  return targets;
}

// The dtype and group a target of `bits` quantisation gets (int4 needs rows of whole 16-column blocks; a
// tensor without them is int8).
DType quant_dtype(const Weight& src, int bits) {
  return bits == 4 && int4_group(src.cols) > 0 ? DType::kI4 : DType::kI8;
}
int64_t quant_group(const Weight& src, DType dt) { return dt == DType::kI4 ? int4_group(src.cols) : int8_group(src.cols); }
bool quantised(DType dt) { return dt == DType::kI8 || dt == DType::kI4; }

}  // namespace

void quantize_decoder_int8(ModelWeights& w, int threads) { quantize_decoder(w, threads, 8); }

void quantize_decoder(ModelWeights& w, int threads, int bits) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, threads);
  for (Weight* t : int8_targets(w)) {
    const Weight src = *t;
    if (quantised(src.dtype) || src.rows <= 0 || src.cols <= 0) continue;
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
          quantize_rows_int4(src, group, r0, r1, q.get(), sc.get());
        else
          quantize_rows_int8(src, group, r0, r1, reinterpret_cast<int8_t*>(q.get()), sc.get());
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
  if (quantised(w.lm_head.dtype)) release_source(w, w.embed_tokens);
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
  // What the cache file must hold: the checkpoint's files and the tensors int8 replaces, in a fixed order.
  std::vector<Int8CacheFile> files;
  for (const auto& a : w.archives) {
    const std::string& path = a->path();
    const size_t slash = path.find_last_of('/');
    files.push_back(Int8CacheFile{slash == std::string::npos ? path : path.substr(slash + 1), a->file_size(), a->mtime_ns(),
                                  fnv1a(a->header_bytes(), a->header_size())});
  }
  std::vector<Weight*> targets;
  std::vector<Int8CacheTensor> tensors;
  for (Weight* t : int8_targets(w)) {
    if (t->rows <= 0 || t->cols <= 0) continue;
    targets.push_back(t);
    const DType dt = quant_dtype(*t, bits);
    Int8CacheTensor e{t->name, dtype_name(t->dtype), t->rows, t->cols, quant_group(*t, dt)};
    e.int4 = dt == DType::kI4;
    tensors.push_back(e);
  }
  const Int8CachePlan plan = plan_int8_cache(model_dir, files, tensors, bits);
  const std::string dir = root + "/int8";
  const std::string path = int8_cache_file(root, plan);
  // Points the int8 targets into a mapped cache file.
  auto use_map = [&](Int8CacheMap& m) {
    for (size_t i = 0; i < targets.size(); ++i) {
      const Int8CacheTensor& e = plan.tensors[i];
      Weight out = *targets[i];
      out.data = m.data + e.q_off;
      out.dtype = e.int4 ? DType::kI4 : DType::kI8;
      out.scales = reinterpret_cast<const float*>(m.data + e.s_off);
      out.group = e.group;
      *targets[i] = out;
    }
    w.owned.push_back(std::move(m.mapping));
    w.int8_map_base = m.base;
    w.int8_map_size = m.size;
  };
  Int8CacheMap mapped;
  if (!root.empty() && map_int8_cache(plan, path, &mapped)) {
    use_map(mapped);
    w.int8_cache = "hit";
    w.int8_cache_path = path;
    w.int8_mapped = true;
    return;
  }
  const size_t owned_before = w.owned.size();
  quantize_decoder(w, threads, bits);
  std::vector<Int8Payload> payload;
  for (size_t i = 0; i < targets.size(); ++i) {
    const Weight& t = *targets[i];
    if (t.dtype != (plan.tensors[i].int4 ? DType::kI4 : DType::kI8) || t.group != plan.tensors[i].group) {
      payload.clear();
      break;
    }
    payload.push_back(Int8Payload{t.data, t.scales});
  }
  if (root.empty() || payload.size() != targets.size() || !write_int8_cache(plan, dir, path, payload)) {
    w.int8_cache = "unwritable";
    return;
  }
  w.int8_cache_path = path;
  w.int8_cache = "miss";
  // Serve the weights from the file just written (file-backed pages, shared with other processes and not
  // resident until read) and free the quantised buffers; if that fails, keep the buffers.
  if (map_int8_cache(plan, path, &mapped)) {
    use_map(mapped);
    w.owned.erase(w.owned.begin() + static_cast<std::ptrdiff_t>(owned_before), w.owned.end() - 1);
    w.int8_mapped = true;
  }
}

}  // namespace rustasr
