#include "large_pages.h"

#include "safetensors.h"  // populate_pages, release_pages

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#if defined(__linux__)
#include <fcntl.h>
#include <sys/ioctl.h>
#endif

namespace rustasr {

#if defined(__linux__)
namespace {

constexpr uintptr_t kLarge = kLargePageBytes;

// PAGEMAP_SCAN (<linux/fs.h>, Linux 6.7+), spelled out for older headers.
struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kPageIsHuge = uint64_t(1) << 6;

// Bytes of [b, e) mapped by huge-page entries; -1 when the kernel cannot tell.
int64_t huge_bytes(int pagemap, uintptr_t b, uintptr_t e) {
  PageRegion r[8] = {};  // written by the kernel (zeroed first: tools that do not know this ioctl see it defined)
  int64_t n = 0;
  while (b < e) {
    PmScanArg a{sizeof(PmScanArg), 0, b, e, 0, reinterpret_cast<uint64_t>(r), 8, 0, 0, kPageIsHuge, 0, kPageIsHuge};
    const int k = ::ioctl(pagemap, kPagemapScan, &a);
    if (k < 0) return -1;
    for (int i = 0; i < k; ++i) n += static_cast<int64_t>(r[i].end - r[i].start);
    if (k < 8 || a.walk_end <= b) break;
    b = a.walk_end;
  }
  return n;
}

// Every page of the 2 MiB stretch at w is in the page cache.
bool cached(uintptr_t w) {
  unsigned char v[kLarge / 4096];
  if (::sysconf(_SC_PAGESIZE) != 4096) return false;
  if (::mincore(reinterpret_cast<void*>(w), kLarge, v) != 0) return false;
  for (unsigned char c : v)
    if (!(c & 1)) return false;
  return true;
}

// Maps the stretch at w, says whether it is one 2 MiB page (1), 4 KiB pages (0) or unknown (-1), and
// unmaps it again.
int probe(int pagemap, uintptr_t w) {
  const void* p = reinterpret_cast<const void*>(w);
  if (populate_pages(p, kLarge) == 0) return -1;
  const int64_t h = huge_bytes(pagemap, w, w + kLarge);
  release_pages(p, kLarge);
  return h < 0 ? -1 : (h >= static_cast<int64_t>(kLarge) ? 1 : 0);
}

}  // namespace

void* map_file_readonly(int fd, size_t size) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t len = (size + page - 1) / page * page;
  if (size >= 2 * kLarge) {
    // Reserve 2 MiB more than needed, place the file at the first 2 MiB boundary inside, trim the rest.
    const size_t span = len + kLarge;
    void* raw = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw != MAP_FAILED) {
      const uintptr_t r = reinterpret_cast<uintptr_t>(raw), a = (r + kLarge - 1) & ~(kLarge - 1);
      void* m = ::mmap(reinterpret_cast<void*>(a), size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
      if (m == MAP_FAILED) {
        ::munmap(raw, span);
      } else {
        if (a > r) ::munmap(raw, a - r);
        if (r + span > a + len) ::munmap(reinterpret_cast<void*>(a + len), r + span - (a + len));
        return m;
      }
    }
  }
  return ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
}

void advise_large_pages(const void* base, size_t size) {
  if (!base || size == 0) return;
  ::madvise(const_cast<void*>(base), size, MADV_HUGEPAGE);
}

void advise_small_pages(const void* p, size_t n) {
  if (!p || n == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(b), e - b, MADV_NOHUGEPAGE);
}

LargePageReport prepare_large_pages(const void* base, size_t size, const std::string& path) {
  LargePageReport rep;
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  const uintptr_t first = (b + kLarge - 1) & ~(kLarge - 1), last = (b + size) & ~(kLarge - 1);
  if (!base || last < first + 2 * kLarge) return rep;
  advise_large_pages(base, size);
  // A 2 MiB entry needs the file offset and the address to agree modulo 2 MiB (offset 0 is at base).
  if (b % kLarge != 0) {
    rep.state = "unsupported";
    return rep;
  }
  const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) {
    rep.state = "unknown";
    return rep;
  }
  const uintptr_t stretches = (last - first) / kLarge;
  const uintptr_t step = std::max<uintptr_t>(1, stretches / 16);
  uintptr_t small = 0;  // a cached stretch in 4 KiB pages
  bool unknown = false;
  for (uintptr_t i = 0; i < stretches && rep.sampled < 16 && !unknown; i += step) {
    const uintptr_t w = first + i * kLarge;
    if (!cached(w)) continue;
    const int r = probe(pagemap, w);
    if (r < 0) {
      unknown = true;
      break;
    }
    ++rep.sampled;
    if (r == 1) ++rep.large;
    else if (!small) small = w;
  }
  if (unknown) {
    rep.state = "unknown";
  } else if (rep.sampled == 0) {
    rep.state = "uncached";
  } else if (rep.large * 4 >= rep.sampled * 3) {
    rep.state = "large";
  } else {
    // Can this file system cache the file in 2 MiB folios? Drop one stretch and map it again (a 2 MiB read).
    rep.state = "unsupported";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      // Dirty pages (a file still being written back) cannot be dropped: write them out first.
      const off_t off = static_cast<off_t>(small - b);
      ::sync_file_range(fd, off, static_cast<off_t>(kLarge),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
      ::posix_fadvise(fd, off, static_cast<off_t>(kLarge), POSIX_FADV_DONTNEED);
      if (probe(pagemap, small) == 1) {
        // Yes: drop the rest too (clean pages nobody maps); they come back in 2 MiB folios as they are used.
        drop_file_cache(fd, true);
        rep.state = "reread";
      }
      ::close(fd);
    }
  }
  ::close(pagemap);
  return rep;
}

void drop_file_cache(int fd, bool sync) {
  if (fd < 0) return;
  if (sync) ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

#else  // !__linux__

void* map_file_readonly(int fd, size_t size) { return ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0); }
void advise_large_pages(const void*, size_t) {}
void advise_small_pages(const void*, size_t) {}
LargePageReport prepare_large_pages(const void*, size_t, const std::string&) { return LargePageReport{}; }
void drop_file_cache(int, bool) {}

#endif

}  // namespace rustasr
