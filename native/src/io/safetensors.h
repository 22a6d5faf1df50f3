// Read-only, memory-mapped access to .safetensors checkpoints (single file or sharded with an index).
//
// File format: 8-byte little-endian header length N, N bytes of JSON header, then the data section. The
// header maps tensor names to {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]} where the
// offsets are byte offsets relative to the start of the data section; "__metadata__" is skipped.
//
// Validation at open (any failure -> Error(kCorruptWeights) naming the file and, where relevant, the tensor):
//   * file size >= 8, N <= file size - 8, N < 100 MB, the header is strict JSON and a JSON object;
//   * every entry is an object with dtype (string), shape (array of non-negative integers) and
//     data_offsets (two non-negative integers) with begin <= end <= data size;
//   * for known dtypes, end - begin == product(shape) * dtype size (overflow-checked).
// A dtype string the format does not know is accepted at open (its byte size cannot be checked, only the
// offsets' bounds); it and known-but-unusable dtypes (I64, F64, U8, F8_*, ...) are reported as
// kUnsupportedDtype, by name, when a caller asks for the tensor as a Weight. Non-empty tensor regions must
// not overlap (not even as exact aliases, which the format does not have); gaps between them are accepted.
// The file must be a regular file (a FIFO or device is kIo before it is read, io/file.h).
//
// Alignment: the mapping is page-aligned but a tensor may start at any byte offset (e.g. a BF16 tensor with
// an odd element count before an F32 tensor). aligned_data() returns a pointer aligned to the dtype size,
// copying the tensor into an owned aligned buffer in the rare case the mapped bytes are not; ModelWeights
// always goes through it, so a Weight's data is aligned for its dtype.
//
// Other notes: Linux/macOS only (POSIX open/fstat/mmap). The data is little-endian as the format requires;
// big-endian hosts are rejected at compile time. If the file is truncated by another process while mapped,
// accessing the lost pages raises SIGBUS (inherent to mmap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../util/tensor.h"

namespace rustasr {

// "[a, b, c]": a shape as error messages print it.
std::string shape_str(const std::vector<int64_t>& shape);


struct TensorInfo {
  std::string name;
  std::string dtype_str;        // as written in the header, e.g. "BF16", "I64"
  bool supported = false;       // dtype_str is BF16, F16 or F32
  DType dtype = DType::kBF16;   // valid only when supported
  bool known_dtype = false;     // dtype_str is a safetensors dtype (its size was checked)
  std::vector<int64_t> shape;   // empty for a scalar
  uint64_t numel = 1;           // product(shape)
  const uint8_t* data = nullptr;  // into the mapping (may be unaligned, see aligned_data)
  size_t nbytes = 0;            // end - begin
};

class SafetensorsArchive {
 public:
  // Maps and validates `path`. Throws kModelNotFound if it does not exist, kIo on OS errors (permission,
  // not a regular file, mmap failure), kCorruptWeights on any format violation.
  static std::shared_ptr<SafetensorsArchive> open(const std::string& path);

  ~SafetensorsArchive();
  SafetensorsArchive(const SafetensorsArchive&) = delete;
  SafetensorsArchive& operator=(const SafetensorsArchive&) = delete;

  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }

  // Tensors in header order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr if the archive has no tensor of that name.
  const TensorInfo* find(const std::string& name) const;

  // The tensor's data aligned to its element size (a copy owned by the archive if the mapping is
  // misaligned). Requires t.supported and t to belong to this archive. Thread-safe.
  const void* aligned_data(const TensorInfo& t) const;

  // The JSON header's bytes as they are in the file (for fingerprints of the checkpoint).
  const char* header_bytes() const { return reinterpret_cast<const char*>(base_) + 8; }
  size_t header_size() const { return header_size_; }
  // Modification time of the file when it was opened, in nanoseconds since the epoch.
  int64_t mtime_ns() const { return mtime_ns_; }

  // Resident-memory control over the mapping. Both act only on [p, p + n) intersected with this file's
  // mapping (an aligned copy or any other memory is left alone) and return the bytes they covered.
  // release(): drops the whole pages inside the range from the process (madvise MADV_DONTNEED on the
  // read-only private mapping: they stop counting in RSS and are read again from the page cache if touched).
  // populate(): maps the range's pages in one call before it is read whole (MADV_POPULATE_READ, Linux 5.14+;
  // elsewhere, or if refused, later reads fault them in as usual).
  size_t release(const void* p, size_t n) const;
  size_t populate(const void* p, size_t n) const;

  // The whole file's mapping (page-aligned; on a 2 MiB boundary for files of 4 MiB or more).
  const uint8_t* map_base() const { return base_; }

 private:
  SafetensorsArchive() = default;
  void parse_header();

  std::string path_;
  const uint8_t* base_ = nullptr;  // mapping of the whole file
  size_t size_ = 0;
  size_t header_size_ = 0;
  int64_t mtime_ns_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;

  mutable std::mutex copies_mu_;
  mutable std::map<const TensorInfo*, std::unique_ptr<uint64_t[]>> copies_;  // misaligned tensors
};

// A checkpoint made of one or more archives: either a single model.safetensors or the shards listed by a
// model.safetensors.index.json ({"weight_map": {tensor name: shard file name}, ...}).
class TensorSource {
 public:
  static TensorSource open_single(const std::string& safetensors_path);

  // Opens every shard named in the index once. The index is read with a kMaxIndexBytes cap (io/file.h). Shard names must be plain file names in the index's
  // directory: empty names, "." / "..", names containing '/', '\\', ".." or NUL are rejected with
  // kCorruptWeights (the index is part of the checkpoint). A malformed index or missing "weight_map" ->
  // kCorruptWeights; a missing shard file -> kModelNotFound; an index entry whose shard lacks the tensor ->
  // kCorruptWeights. Tensors present in shards but absent from the index are not visible.
  static TensorSource open_index(const std::string& index_path);

  // The tensor and the archive holding it, or {nullptr, nullptr} if absent.
  struct Found {
    const TensorInfo* info = nullptr;
    const SafetensorsArchive* archive = nullptr;
  };
  Found find(const std::string& name) const;

  const std::vector<std::shared_ptr<SafetensorsArchive>>& archives() const { return archives_; }
  size_t tensor_count() const;  // visible tensors
  // Calls f(name) for every visible tensor.
  template <typename F>
  void for_each_name(F&& f) const {
    if (sharded_) {
      for (const auto& e : weight_map_) f(e.first);
    } else if (!archives_.empty()) {
      for (const TensorInfo& t : archives_[0]->tensors()) f(t.name);
    }
  }

 private:
  std::vector<std::shared_ptr<SafetensorsArchive>> archives_;
  bool sharded_ = false;
  std::unordered_map<std::string, size_t> weight_map_;  // sharded: name -> index into archives_
};

// Page-granular madvise helpers for read-only file mappings (the archive methods above and the int8 weight
// cache use them). release_pages: MADV_DONTNEED on the whole pages inside [p, p + n); populate_pages:
// MADV_POPULATE_READ on every page touching it. Never use release_pages on anonymous memory (it would be
// zeroed). Both return the bytes they asked the kernel about (0 when nothing was done).
size_t release_pages(const void* p, size_t n);
size_t populate_pages(const void* p, size_t n);

// Byte size in bits of a known safetensors dtype ("BF16" -> 16, "F4" -> 4), or 0 if unknown.
int safetensors_dtype_bits(const std::string& dtype);

}  // namespace rustasr
