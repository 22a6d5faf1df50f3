// The on-disk int8 cache of a model's quantised decoder: the file format, and mapping / writing a file.
// What is quantised, and when, is the model's business (model/int8.cpp); this file knows only tensors by
// name, shape, group and the source checkpoint's files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rustasr {

// One file of the source checkpoint, as the cache records it: a cache is valid only for the same files.
struct Int8CacheFile {
  std::string name;      // the file name (no directory)
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t header_hash = 0;  // fnv1a of the safetensors JSON header
};

// One quantised tensor; q_off / s_off (relative to the data offset) are filled in by plan_int8_cache.
struct Int8CacheTensor {
  std::string name;
  std::string dtype;  // the source dtype ("BF16", ...)
  int64_t rows = 0, cols = 0, group = 0;
  bool int4 = false;  // int4 nibbles (cols / 2 bytes a row) instead of int8 (cols bytes a row)
  uint64_t q_off = 0, s_off = 0;
  uint64_t q_bytes() const {
    return static_cast<uint64_t>(rows) * static_cast<uint64_t>(int4 ? cols / 2 : cols);
  }
};

// What a valid cache file for a checkpoint must hold, byte for byte: preamble, meta, size, offsets.
struct Int8CachePlan {
  std::string meta;
  uint64_t data_offset = 0, file_size = 0;
  std::vector<Int8CacheTensor> tensors;
  std::string key;  // the file's name stem: one file per model directory and format version
};

// bits 8: an int8 cache file; bits 4: an int4 one (another file: its header names int4; tensors without
// int4 blocks are int8 in it).
Int8CachePlan plan_int8_cache(const std::string& model_dir, const std::vector<Int8CacheFile>& files,
                              std::vector<Int8CacheTensor> tensors, int bits = 8);

// A mapped cache file: tensor i's int8 data at data + plan.tensors[i].q_off, its scales at data + s_off.
struct Int8CacheMap {
  std::shared_ptr<void> mapping;  // unmaps when the last owner drops it
  const char* base = nullptr;
  size_t size = 0;
  const char* data = nullptr;
};

// Maps `path` read-only when it is exactly the file the plan implies (never a FIFO or a symlink: O_NONBLOCK,
// O_NOFOLLOW); false otherwise (a missing, stale, truncated or foreign file).
bool map_int8_cache(const Int8CachePlan& plan, const std::string& path, Int8CacheMap* out);

// The quantised data of plan.tensors[i].
struct Int8Payload {
  const void* q = nullptr;        // q_bytes() of int8 / int4 data
  const float* scales = nullptr;  // rows * (cols / group) float32
};

// Writes the file atomically (an exclusive temporary file in `dir`, fdatasync, rename over `path`; `dir` is
// created, its last component must be a real directory). False, and nothing left behind, on any failure.
bool write_int8_cache(const Int8CachePlan& plan, const std::string& dir, const std::string& path,
                      const std::vector<Int8Payload>& payload);

// `<root>/int8/<plan.key>.rq8`.
std::string int8_cache_file(const std::string& root, const Int8CachePlan& plan);

// The default cache root: $RUSTASR_CACHE_DIR, else $XDG_CACHE_HOME/rustasr, else $HOME/.cache/rustasr (the
// root the SDK downloads models into); "" when none is set.
std::string default_cache_root();

// "~" and "~/..." with $HOME.
std::string expand_home(const std::string& path);

uint64_t fnv1a(const void* p, size_t n);

}  // namespace rustasr
