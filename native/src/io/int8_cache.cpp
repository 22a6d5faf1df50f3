// The on-disk int8 cache file (see int8_cache.h).
#include "int8_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "large_pages.h"

namespace rustasr {

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
//   [data offset..)  per tensor: rows * cols int8 (an int4 tensor: rows * cols / 2 bytes of nibble pairs),
//                    then rows * (cols / group) float32 scales, each on a
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

}  // namespace

uint64_t fnv1a(const void* p, size_t n) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

namespace {

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

}  // namespace

std::string expand_home(const std::string& p) {
  const std::string home = env_str("HOME");
  if (!home.empty() && (p == "~" || p.rfind("~/", 0) == 0)) return home + p.substr(1);
  return p;
}

Int8CachePlan plan_int8_cache(const std::string& model_dir, const std::vector<Int8CacheFile>& files,
                              std::vector<Int8CacheTensor> tensors, int bits) {
  Int8CachePlan plan;
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
  for (const Int8CacheFile& f : files) {
    m += "file " + f.name + " size " + std::to_string(f.size) + " mtime_ns " + std::to_string(f.mtime_ns) +
         " header_fnv1a " + hex64(f.header_hash) + "\n";
  }
  uint64_t off = 0;
  for (Int8CacheTensor& e : tensors) {
    e.q_off = off;
    off = align_up(off + e.q_bytes(), 64);
    e.s_off = off;
    off += static_cast<uint64_t>(e.rows) * static_cast<uint64_t>(e.cols / e.group) * sizeof(float);
    m += "tensor " + e.name + " " + e.dtype + " " + std::to_string(e.rows) + " " + std::to_string(e.cols) + " " +
         (bits == 4 ? std::string(e.int4 ? "I4 " : "I8 ") : std::string()) + std::to_string(e.group) + " " +
         std::to_string(e.q_off) + " " + std::to_string(e.s_off) + "\n";
    off = align_up(off, 64);
  }
  plan.tensors = std::move(tensors);
  plan.data_offset = align_up(kPreambleBytes + m.size(), 4096);
  plan.file_size = plan.data_offset + off;
  // One file per model directory and format version: the meta up to the first file line.
  const size_t key_len = std::min(m.size(), m.find("\nfile "));
  plan.key = hex64(fnv1a(m.data(), key_len));
  return plan;
}

namespace {

Preamble make_preamble(const Int8CachePlan& plan) {
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

}  // namespace

bool map_int8_cache(const Int8CachePlan& plan, const std::string& path, Int8CacheMap* out) {
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
  out->mapping = std::move(mapping);
  out->base = base;
  out->size = size;
  out->data = base + plan.data_offset;
  return true;
}

namespace {

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

}  // namespace

bool write_int8_cache(const Int8CachePlan& plan, const std::string& dir, const std::string& path,
                      const std::vector<Int8Payload>& payload) {
  if (payload.size() != plan.tensors.size()) return false;
  for (const Int8Payload& p : payload)
    if (!p.q || !p.scales) return false;
  if (!make_dirs(dir)) return false;
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const Preamble pre = make_preamble(plan);
  bool ok = write_all(fd, &pre, sizeof pre, 0) && write_all(fd, plan.meta.data(), plan.meta.size(), kPreambleBytes);
  for (size_t i = 0; i < plan.tensors.size() && ok; ++i) {
    const Int8CacheTensor& e = plan.tensors[i];
    ok = write_all(fd, payload[i].q, e.q_bytes(), plan.data_offset + e.q_off) &&
         write_all(fd, payload[i].scales, static_cast<uint64_t>(e.rows) * (e.cols / e.group) * sizeof(float),
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

std::string default_cache_root() {
  const std::string explicit_dir = env_str("RUSTASR_CACHE_DIR");
  if (!explicit_dir.empty()) return expand_home(explicit_dir);
  const std::string xdg = env_str("XDG_CACHE_HOME");
  if (!xdg.empty()) return expand_home(xdg) + "/rustasr";
  const std::string home = env_str("HOME");
  if (!home.empty()) return home + "/.cache/rustasr";
  return "";
}

std::string int8_cache_file(const std::string& root, const Int8CachePlan& plan) {
  return root + "/int8/" + plan.key + ".rq8";
}

}  // namespace rustasr
