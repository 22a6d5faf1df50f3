// Which weights are resident, and in which pages.
#pragma once

#include <cstddef>

#include "weights.h"

namespace rustasr {

class Model;

// Resident-set control between stages (safe at any time, from any thread: a page dropped while another
// session reads it is simply read again from the page cache). Each drops the pages of one part of the model
// from the process where they are file-backed (the mapped checkpoint, the mapped int8 cache); anonymous
// memory (int8 quantised without a cache, aligned copies of misaligned tensors) is left alone. They return
// the bytes covered. The next use faults the pages back in from the page cache (no disk read while the
// system keeps them cached): about 0.6 s per GB of 4 KiB faults on the reference VM, ~40 ms per GB when
// mapped in one call first with the populate_* functions (MADV_POPULATE_READ) plus ~0.3-0.5 s per GB on the
// first passes over new 4 KiB mappings there (paravirtualised page tables), and ~30 ms per GB in all with
// 2 MiB pages (prepare_weight_pages; docs/performance.md, "2 MiB pages"). Releases cover whole 2 MiB
// stretches of each stage's merged ranges, so 2 MiB mappings are never split. So a session can keep only
// one stage's weights resident for a smaller peak RSS (the encoder's are not needed while decoding, nor the
// decoder's while encoding): release_decoder + populate_encoder before encoding, release_encoder +
// populate_decoder after it (measured in docs/performance.md, "Recorded run 3"). The embedding table is
// released with the decoder but only populated when it is read whole (a BF16 tied lm_head).
// 2 MiB pages for the mapped files (io/large_pages.h): prepare_large_pages on every checkpoint archive
// (int8_file = false; call before the weights are first read) or on the mapped int8 cache file (true; after
// make_decoder_int8). Records the least favourable state seen in w.large_pages.
void prepare_weight_pages(ModelWeights& w, bool int8_file);

// With 2 MiB pages, the weights read a few KiB at a time must not map whole 2 MiB pages: the embedding
// table, when it is only a lookup table (not also the BF16 lm_head), is advised MADV_NOHUGEPAGE; with int8
// the decoder norms, which lie between BF16 matrices int8 never reads again, are copied (~130 KiB for 0.6B;
// mapped, they brought ~100 MB of those matrices into the resident set).
void keep_lookups_in_small_pages(ModelWeights& w, bool int8);

size_t release_encoder_pages(const ModelWeights& w);
size_t release_decoder_pages(const ModelWeights& w);
size_t populate_encoder_pages(const ModelWeights& w);
size_t populate_decoder_pages(const ModelWeights& w);

// Process-wide allocator policy for large buffers (glibc only; once per process, on the first load):
// allocations of 1 MiB and more (activations, KV cache, packing buffers) are served by mmap and returned to
// the system when freed, instead of staying resident in per-thread malloc arenas after a session ends. Left
// alone when the user set MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES.
void tune_allocator();

// The stage residency policy for one call of a session (ModelParams::low_memory): only the encoder's weights
// while encoding, the decoder's while decoding, each stage mapped in one call; off on a GPU backend, and
// skipped while another session of the model is busy (alone = no other session was busy when the call began).
class StageResidency {
 public:
  StageResidency(const Model& m, bool alone);
  void before_encode();                 // release the decoder's pages, map the encoder's
  void after_encode(bool still_alone);  // release the encoder's, map the decoder's (only if still alone)
  bool active() const { return on_; }

 private:
  const ModelWeights& w_;
  bool on_;
};

}  // namespace rustasr
