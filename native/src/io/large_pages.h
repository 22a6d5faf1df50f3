// 2 MiB pages for the memory-mapped weights (Linux; a no-op elsewhere).
//
// The weights are read-only file mappings. Where the kernel keeps the file's page cache in 2 MiB folios
// (ext4/xfs/tmpfs with large folios, Linux 6.x) and the mapping asks for it (MADV_HUGEPAGE), a 2 MiB stretch
// is mapped by one page-table entry instead of 512. That matters for two things this engine does:
//   * stage residency (ModelParams::low_memory) drops a stage's pages and maps them back every run; with
//     4 KiB pages the first passes over freshly mapped pages cost ~0.3-0.5 s per GB on the reference VM
//     (paravirtualised page tables: every new mapping is a hypervisor round trip), with 2 MiB pages ~nothing;
//   * the packed GEMM of encoder/prefill reads 16-32 weight rows at once (many pages per TLB entry set).
// A file that is already cached in 4 KiB folios (just written or copied, read by another program) stays
// so until evicted: mapping it cannot change that. prepare_large_pages() detects that case and, where the
// file system can cache it in 2 MiB folios, drops the file's cached pages once so that they are read again
// in 2 MiB folios as the engine touches them (a one-time re-read from disk or the host cache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rustasr {

// The large page size these functions work with (x86-64 and arm64 with 4 KiB base pages: one PMD entry).
constexpr uintptr_t kLargePageBytes = uintptr_t(2) << 20;

// What prepare_large_pages found and did, for ModelInfo ("large_pages"):
//   "large"       sampled cached stretches are mapped in 2 MiB pages already;
//   "reread"      they were in 4 KiB pages: the file's cached pages were dropped (read again in 2 MiB pages);
//   "uncached"    no sampled stretch was cached: it will be read in 2 MiB pages where the kernel can;
//   "unsupported" a stretch read again still came in 4 KiB pages (file system or kernel without large
//                 folios, or THP disabled): nothing dropped;
//   "unknown"     the kernel cannot report page sizes (PAGEMAP_SCAN, Linux 6.7+): advised only;
//   "off"         not asked for, not Linux, or a file smaller than 4 MiB.
struct LargePageReport {
  std::string state = "off";
  int sampled = 0;  // 2 MiB stretches examined (cached ones)
  int large = 0;    // of which mapped by one 2 MiB entry
};

// mmap(PROT_READ, MAP_PRIVATE) of the first `size` bytes of `fd`, placed on a 2 MiB boundary when the file
// is at least 4 MiB (so that file offsets and addresses agree modulo 2 MiB, which a 2 MiB entry needs).
// MAP_FAILED on failure, like mmap; munmap(p, size) releases it.
void* map_file_readonly(int fd, size_t size);

// madvise(MADV_HUGEPAGE) on a read-only file mapping (faults then read the file in 2 MiB folios). Safe to
// call on any mapping; a no-op where unsupported.
void advise_large_pages(const void* base, size_t size);

// madvise(MADV_NOHUGEPAGE) on the pages covering [p, p + n) of such a mapping: for data read a few rows at a
// time (a lookup table), where each row touched would otherwise map a whole 2 MiB page into the process.
void advise_small_pages(const void* p, size_t n);

// For a fresh read-only mapping of the file at `path` ([base, base + size), offset 0, nothing of it mapped
// by this process yet beyond its header): samples up to 16 2 MiB stretches that are fully in the page
// cache, maps each (MADV_POPULATE_READ), asks the kernel whether it is one 2 MiB page (PAGEMAP_SCAN) and
// unmaps it again. When most are 4 KiB pages, one stretch is dropped from the page cache and mapped again
// to see whether the file system caches this file in 2 MiB folios; only then is the whole file's cache
// dropped (POSIX_FADV_DONTNEED: pages another process maps stay). Never reads uncached data. Returns what
// it found and did; never throws.
LargePageReport prepare_large_pages(const void* base, size_t size, const std::string& path);

// Drops a file's clean cached pages (fsync first when `sync`), so the next mapping reads it in 2 MiB folios
// where it can (used after the engine writes a file it maps next: the int8 cache). Best effort.
void drop_file_cache(int fd, bool sync);

}  // namespace rustasr
