// int8 decoder weights (ModelParams::quant = "int8"): quantised at load, or mapped from the on-disk cache.
#pragma once

#include <string>

#include "weights.h"

namespace rustasr {

// Replaces the decoder's linear weights (q, k, v, o, gate, up, down of every layer) and lm_head by
// symmetric int8 copies (DType::kI8) with one float32 scale per group of 128 (else 64, 32 or 16, else the
// whole row) consecutive columns: scale = max|w| / 127, q = round(w / scale). The BF16 sources stay mapped
// (embed_tokens is still read from them) but their pages are dropped from the process (madvise
// MADV_DONTNEED on the mapped range) once quantised, so they are no longer resident. `threads` workers
// (0 = hardware concurrency) share the work.
void quantize_decoder_int8(ModelWeights& w, int threads);

// The same with `bits` 8 (quantize_decoder_int8) or 4: symmetric int4 in blocks of 32 columns (else 16) with
// one float32 scale per block, scale = max|w| / 7 (DType::kI4, util/tensor.h); a tensor whose rows cannot
// be split in such blocks is int8.
void quantize_decoder(ModelWeights& w, int threads, int bits);

// The on-disk int8 cache: `dir` is the cache root (the int8 files go in `<root>/int8/`), empty = the
// default root ($RUSTASR_CACHE_DIR, else $XDG_CACHE_HOME/rustasr, else $HOME/.cache/rustasr: the root the
// SDK downloads models into). enabled = false: always quantise at load, never read or write a cache file.
struct Int8CacheOptions {
  bool enabled = true;
  std::string dir;
};

// quant = "int8" at load. With the cache enabled, the cache file of `model_dir` (one per model directory:
// `<root>/int8/<hash of the directory's real path>.rq8`) is used when it is valid for the checkpoint as it
// is now: its header must name the same format version, directory, safetensors files (size, mtime, a hash
// of each JSON header) and the same quantised tensors (name, shape, group, offsets), and its size must be
// the one those imply; the int8 data and scales are then mapped read-only (file-backed pages, nothing is
// quantised and the BF16 decoder weights are never touched). Otherwise (no file, a stale, truncated or
// corrupt one) the decoder is quantised at load (quantize_decoder_int8) and the cache is rewritten
// atomically (a temporary file in the same directory, fdatasync, rename), then mapped in place of the
// quantised buffers. Any failure to create the directory or write the file falls back silently to the
// quantised buffers (w.int8_cache = "unwritable"). The int8 payload itself is not checksummed (like the
// checkpoint, it is trusted once the header and size match).
void make_decoder_int8(ModelWeights& w, int threads, const std::string& model_dir, const Int8CacheOptions& cache);

// quant = "int4" (bits 4) or "int8" (bits 8) at load, with the cache rules of make_decoder_int8 (the int4
// file is another file of `<root>/int8/`: its header names int4).
void make_decoder_quant(ModelWeights& w, int threads, const std::string& model_dir, const Int8CacheOptions& cache,
                        int bits);

}  // namespace rustasr
