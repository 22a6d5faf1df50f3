#include "safetensors.h"

#include "file.h"
#include "large_pages.h"

#ifdef _WIN32
// TODO(windows): CreateFileMapping / MapViewOfFile. Only Linux and macOS are supported for now.
#error "safetensors.cpp: memory mapping is implemented for POSIX systems only"
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; big-endian hosts are not supported"
#endif

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "../util/json.h"
#include "rustasr/engine.h"

namespace rustasr {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;  // the reference implementation's limit

[[noreturn]] void corrupt(const std::string& path, const std::string& msg) {
  throw Error(ErrorCode::kCorruptWeights, path + ": " + msg);
}

// Non-negative integer that fits in int64 (JSON integer literal).
bool as_nonneg_int(const JsonValue& v, int64_t* out) {
  if (!v.is_integer() || v.as_int64() < 0) return false;
  *out = v.as_int64();
  return true;
}

// Closes a file descriptor on scope exit.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

std::string dir_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}


int safetensors_dtype_bits(const std::string& d) {
  // The dtypes of the safetensors format (Rust crate `safetensors`, enum Dtype).
  static const std::unordered_map<std::string, int> kBits = {
      {"BOOL", 8},     {"U8", 8},       {"I8", 8},       {"F8_E5M2", 8}, {"F8_E4M3", 8},
      {"F8_E8M0", 8},  {"I16", 16},     {"U16", 16},     {"F16", 16},    {"BF16", 16},
      {"I32", 32},     {"U32", 32},     {"F32", 32},     {"F64", 64},    {"I64", 64},
      {"U64", 64},     {"C64", 64},     {"F4", 4},       {"F6_E2M3", 6}, {"F6_E3M2", 6},
  };
  auto it = kBits.find(d);
  return it == kBits.end() ? 0 : it->second;
}

// ---- SafetensorsArchive -------------------------------------------------------------------------------

std::shared_ptr<SafetensorsArchive> SafetensorsArchive::open(const std::string& path) {
  std::shared_ptr<SafetensorsArchive> a(new SafetensorsArchive());
  a->path_ = path;

  const int fd = open_regular_file(path, nullptr);  // a FIFO or device is kIo at once (io/file.h)
  FdGuard guard{fd};

  struct stat st;
  if (::fstat(fd, &st) != 0) {
    throw Error(ErrorCode::kIo, "cannot stat " + path + ": " + std::strerror(errno));
  }
  if (st.st_size < 8) {
    corrupt(path, "file is " + std::to_string(st.st_size) + " bytes, too small for a safetensors header");
  }
  if (static_cast<uint64_t>(st.st_size) > std::numeric_limits<size_t>::max()) {
    throw Error(ErrorCode::kIo, path + " is too large to map on this system");
  }
  a->size_ = static_cast<size_t>(st.st_size);
#if defined(__APPLE__)
  a->mtime_ns_ = static_cast<int64_t>(st.st_mtimespec.tv_sec) * 1000000000 + st.st_mtimespec.tv_nsec;
#else
  a->mtime_ns_ = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
#endif

  void* m = map_file_readonly(fd, a->size_);  // on a 2 MiB boundary (io/large_pages.h)
  if (m == MAP_FAILED) {
    throw Error(ErrorCode::kIo, "cannot mmap " + path + ": " + std::strerror(errno));
  }
  a->base_ = static_cast<const uint8_t*>(m);  // from here on the destructor unmaps
  // The mapping stays valid after the descriptor is closed (FdGuard).

  a->parse_header();
  return a;
}

SafetensorsArchive::~SafetensorsArchive() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

void SafetensorsArchive::parse_header() {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base_[i];  // little-endian u64
  const uint64_t avail = size_ - 8;
  if (n > avail) {
    corrupt(path_, "header length " + std::to_string(n) + " exceeds the file size (" + std::to_string(size_) +
                       " bytes)");
  }
  if (n >= kMaxHeaderBytes) corrupt(path_, "header length " + std::to_string(n) + " is unreasonably large");
  if (n < 2) corrupt(path_, "header length " + std::to_string(n) + " is too small for a JSON object");

  header_size_ = static_cast<size_t>(n);
  const char* hdr = reinterpret_cast<const char*>(base_ + 8);
  const uint8_t* data = base_ + 8 + n;
  const uint64_t data_size = avail - n;

  JsonValue root;
  try {
    root = parse_json(hdr, static_cast<size_t>(n));
  } catch (const JsonParseError& e) {
    corrupt(path_, "malformed header: " + std::string(e.what()));
  }
  if (!root.is_object()) corrupt(path_, "header is not a JSON object");

  tensors_.reserve(root.size());
  for (const auto& member : root.members()) {
    const std::string& name = member.first;
    const JsonValue& e = member.second;
    if (name == "__metadata__") continue;
    auto bad = [&](const std::string& msg) { corrupt(path_, "tensor " + name + ": " + msg); };
    if (!e.is_object()) bad("header entry is not an object");

    TensorInfo t;
    t.name = name;

    const JsonValue* dtype = e.get("dtype");
    if (!dtype || !dtype->is_string()) bad("missing or non-string \"dtype\"");
    t.dtype_str = dtype->as_string();
    int bits = safetensors_dtype_bits(t.dtype_str);
    t.known_dtype = bits != 0;
    if (t.dtype_str == "BF16") {
      t.supported = true;
      t.dtype = DType::kBF16;
    } else if (t.dtype_str == "F16") {
      t.supported = true;
      t.dtype = DType::kF16;
    } else if (t.dtype_str == "F32") {
      t.supported = true;
      t.dtype = DType::kF32;
    }

    const JsonValue* shape = e.get("shape");
    if (!shape || !shape->is_array()) bad("missing or non-array \"shape\"");
    uint64_t numel = 1;
    bool numel_overflow = false;
    for (const JsonValue& d : shape->elements()) {
      int64_t dim;
      if (!as_nonneg_int(d, &dim)) bad("\"shape\" must contain non-negative integers");
      t.shape.push_back(dim);
      uint64_t ud = static_cast<uint64_t>(dim);
      if (ud != 0 && numel > std::numeric_limits<uint64_t>::max() / ud) numel_overflow = true;
      else numel *= ud;
    }
    // A zero dimension makes the product 0 whatever overflowed before it.
    for (int64_t dim : t.shape)
      if (dim == 0) {
        numel = 0;
        numel_overflow = false;
      }

    const JsonValue* offs = e.get("data_offsets");
    int64_t begin = 0, end = 0;
    if (!offs || !offs->is_array() || offs->size() != 2 || !as_nonneg_int(offs->at(0), &begin) ||
        !as_nonneg_int(offs->at(1), &end)) {
      bad("\"data_offsets\" must be [begin, end] with non-negative integers");
    }
    if (begin > end) {
      bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] has begin > end");
    }
    if (static_cast<uint64_t>(end) > data_size) {
      bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
          "] point past the end of the data section (" + std::to_string(data_size) + " bytes)");
    }
    const uint64_t nbytes = static_cast<uint64_t>(end - begin);

    if (t.known_dtype) {
      // Expected bytes = numel * bits / 8, with numel * bits a whole number of bytes.
      uint64_t total_bits = 0;
      bool overflow = numel_overflow || (numel != 0 && numel > std::numeric_limits<uint64_t>::max() /
                                                                   static_cast<uint64_t>(bits));
      if (!overflow) total_bits = numel * static_cast<uint64_t>(bits);
      if (overflow || total_bits % 8 != 0 || total_bits / 8 != nbytes) {
        bad("data_offsets span " + std::to_string(nbytes) + " bytes but shape " + shape_str(t.shape) + " of " +
            t.dtype_str + " needs " +
            (overflow ? std::string("more than 2^64 bits") : std::to_string(total_bits / 8) + " bytes" +
                                                                (total_bits % 8 ? " (not a whole byte count)" : "")));
      }
    }
    if (numel_overflow) bad("shape " + shape_str(t.shape) + " has too many elements");

    t.numel = numel;
    t.data = data + begin;
    t.nbytes = static_cast<size_t>(nbytes);
    by_name_.emplace(name, tensors_.size());  // the JSON parser rejects duplicate keys
    tensors_.push_back(std::move(t));
  }

  // No two tensors may share bytes (the format has no aliases: the reference implementation requires the
  // regions to tile the data section). Empty tensors occupy nothing.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_)
    if (t.nbytes > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->data != b->data ? a->data < b->data : a->nbytes < b->nbytes;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& cur = *by_offset[i];
    if (cur.data < prev.data + prev.nbytes) {
      auto range = [&](const TensorInfo& t) {
        const size_t b = static_cast<size_t>(t.data - data);
        return "[" + std::to_string(b) + ", " + std::to_string(b + t.nbytes) + "]";
      };
      corrupt(path_, "tensors " + prev.name + " " + range(prev) + " and " + cur.name + " " + range(cur) +
                         " overlap (data_offsets must not share bytes)");
    }
  }
}

const TensorInfo* SafetensorsArchive::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const void* SafetensorsArchive::aligned_data(const TensorInfo& t) const {
  if (!t.supported) {
    throw Error(ErrorCode::kInternal, "aligned_data on tensor " + t.name + " of dtype " + t.dtype_str);
  }
  const size_t align = dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % align == 0) return t.data;
  // Misaligned: copy once into a buffer aligned to 8 bytes (enough for every supported dtype).
  std::lock_guard<std::mutex> lock(copies_mu_);
  auto it = copies_.find(&t);
  if (it != copies_.end()) return it->second.get();
  std::unique_ptr<uint64_t[]> buf(new uint64_t[(t.nbytes + 7) / 8]);
  std::memcpy(buf.get(), t.data, t.nbytes);
  const void* p = buf.get();
  copies_.emplace(&t, std::move(buf));
  return p;
}

size_t release_pages(const void* p, size_t n) {
  if (!p || n == 0) return 0;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(p);
  const uintptr_t pb = (b + page - 1) & ~(page - 1), pe = (b + n) & ~(page - 1);
  if (pe <= pb) return 0;
  return ::madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_DONTNEED) == 0 ? pe - pb : 0;
}

size_t populate_pages(const void* p, size_t n) {
#if defined(__linux__)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  if (!p || n == 0) return 0;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t pb = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t pe = reinterpret_cast<uintptr_t>(p) + n;
  return ::madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_POPULATE_READ) == 0 ? pe - pb : 0;
#else
  (void)p;
  (void)n;
  return 0;
#endif
}

namespace {

// [p, p + n) clipped to [base, base + size); false when they do not overlap.
bool clip_to(const uint8_t* base, size_t size, const void*& p, size_t& n) {
  const uintptr_t mb = reinterpret_cast<uintptr_t>(base), me = mb + size;
  uintptr_t b = reinterpret_cast<uintptr_t>(p), e = b + n;
  if (e <= mb || b >= me) return false;
  b = std::max(b, mb);
  e = std::min(e, me);
  p = reinterpret_cast<const void*>(b);
  n = e - b;
  return true;
}

}  // namespace

size_t SafetensorsArchive::release(const void* p, size_t n) const {
  return clip_to(base_, size_, p, n) ? release_pages(p, n) : 0;
}

size_t SafetensorsArchive::populate(const void* p, size_t n) const {
  return clip_to(base_, size_, p, n) ? populate_pages(p, n) : 0;
}

// ---- TensorSource -------------------------------------------------------------------------------------

TensorSource TensorSource::open_single(const std::string& path) {
  TensorSource s;
  s.archives_.push_back(SafetensorsArchive::open(path));
  return s;
}

TensorSource TensorSource::open_index(const std::string& index_path) {
  const std::string text =
      read_small_file(index_path, kMaxIndexBytes, ErrorCode::kCorruptWeights, "a safetensors index");

  JsonValue root;
  try {
    root = parse_json(text);
  } catch (const JsonParseError& e) {
    corrupt(index_path, "malformed index: " + std::string(e.what()));
  }
  const JsonValue* wm = root.get("weight_map");
  if (!wm || !wm->is_object()) corrupt(index_path, "missing or non-object \"weight_map\"");

  const std::string dir = dir_of(index_path);
  TensorSource s;
  s.sharded_ = true;
  std::unordered_map<std::string, size_t> shard_index;  // shard file name -> archives_ position
  for (const auto& m : wm->members()) {
    const std::string& tensor = m.first;
    if (!m.second.is_string()) corrupt(index_path, "weight_map entry for " + tensor + " is not a string");
    const std::string& file = m.second.as_string();
    // Shard names must stay inside the model directory.
    if (file.empty() || file == "." || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos || file.find("..") != std::string::npos ||
        file.find('\0') != std::string::npos) {
      corrupt(index_path, "weight_map entry for " + tensor + " names an invalid shard file \"" + file +
                              "\" (must be a plain file name in the same directory)");
    }
    auto it = shard_index.find(file);
    if (it == shard_index.end()) {
      s.archives_.push_back(SafetensorsArchive::open(dir + "/" + file));
      it = shard_index.emplace(file, s.archives_.size() - 1).first;
    }
    const SafetensorsArchive& a = *s.archives_[it->second];
    if (!a.find(tensor)) {
      corrupt(index_path, "weight_map says tensor " + tensor + " is in " + file + ", but " + a.path() +
                              " has no such tensor");
    }
    s.weight_map_.emplace(tensor, it->second);
  }
  return s;
}

TensorSource::Found TensorSource::find(const std::string& name) const {
  Found f;
  if (sharded_) {
    auto it = weight_map_.find(name);
    if (it == weight_map_.end()) return f;
    f.archive = archives_[it->second].get();
    f.info = f.archive->find(name);
    if (!f.info) f.archive = nullptr;
    return f;
  }
  if (!archives_.empty()) {
    f.info = archives_[0]->find(name);
    if (f.info) f.archive = archives_[0].get();
  }
  return f;
}

size_t TensorSource::tensor_count() const {
  if (sharded_) return weight_map_.size();
  return archives_.empty() ? 0 : archives_[0]->tensors().size();
}

}  // namespace rustasr
