// The named tensors of a Qwen3-ASR checkpoint, bound to views of the memory-mapped safetensors files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../io/config.h"
#include "../util/tensor.h"

namespace rustasr {

class SafetensorsArchive;  // io/safetensors.h

struct EncoderLayerWeights {
  Weight attn_ln_w, attn_ln_b;           // self_attn_layer_norm
  Weight q_w, q_b, k_w, k_b, v_w, v_b;   // self_attn.{q,k,v}_proj
  Weight o_w, o_b;                       // self_attn.out_proj
  Weight ffn_ln_w, ffn_ln_b;             // final_layer_norm
  Weight fc1_w, fc1_b, fc2_w, fc2_b;
};

struct DecoderLayerWeights {
  Weight in_norm;                        // input_layernorm
  Weight q_w, k_w, v_w, o_w;             // self_attn.{q,k,v,o}_proj (no bias)
  Weight q_norm, k_norm;                 // self_attn.{q,k}_norm [head_dim]
  Weight post_norm;                      // post_attention_layernorm
  Weight gate_w, up_w, down_w;           // mlp.{gate,up,down}_proj
};

struct ModelWeights {
  // audio tower (thinker.audio_tower.*)
  Weight conv1_w, conv1_b, conv2_w, conv2_b, conv3_w, conv3_b;  // conv2d{1,2,3}: w viewed [cout, cin*9]
  Weight conv_out_w;                                            // [d_model, C * (mel/8)], no bias
  std::vector<EncoderLayerWeights> enc_layers;
  Weight ln_post_w, ln_post_b;
  Weight proj1_w, proj1_b, proj2_w, proj2_b;
  // text decoder (thinker.model.*, thinker.lm_head.weight)
  Weight embed_tokens;                                          // [vocab, hidden]
  std::vector<DecoderLayerWeights> dec_layers;
  Weight final_norm;
  Weight lm_head;                                               // = embed_tokens when tied and absent

  // Keeps the mapped files alive as long as the views above are used.
  std::vector<std::shared_ptr<SafetensorsArchive>> archives;
  // Buffers made at load (int8 weights and their scales, or the mapped int8 cache file) that views above
  // point into.
  std::vector<std::shared_ptr<void>> owned;

  // Where the int8 decoder came from (make_decoder_int8): "off" (BF16 weights, or int8 quantised at load
  // with the cache disabled), "hit" (mapped from a valid cache file), "miss" (quantised at load, then
  // written to the cache and mapped from it), "unwritable" (quantised at load; the cache file could not be
  // written, so the int8 weights stay in anonymous memory).
  std::string int8_cache = "off";
  std::string int8_cache_path;  // the cache file read or written ("" when none)
  bool int8_mapped = false;     // the int8 weights point into the mapped cache file (file-backed pages)
  const void* int8_map_base = nullptr;  // that file's mapping (when int8_mapped)
  size_t int8_map_size = 0;
  // 2 MiB pages for the mapped files (prepare_weight_pages): "off" when not asked for, else the least
  // favourable LargePageReport state over the mapped files (see io/large_pages.h).
  std::string large_pages = "off";
};

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

// Opens `dir`/model.safetensors or `dir`/model.safetensors.index.json (sharded), then binds every tensor the
// config requires, checking name, shape and dtype (BF16/F16/F32 accepted). The first problem is thrown:
// kMissingTensor "missing tensor thinker.model.layers.3.mlp.up_proj.weight",
// kTensorShape "tensor X has shape [a, b], expected [c, d]", kUnsupportedDtype, kCorruptWeights, kModelNotFound.
ModelWeights load_model_weights(const std::string& dir, const ModelConfig& config);

// Replaces the decoder's linear weights (q, k, v, o, gate, up, down of every layer) and lm_head by
// symmetric int8 copies (DType::kI8) with one float32 scale per group of 128 (else 64 or 32, else the
// whole row) consecutive columns: scale = max|w| / 127, q = round(w / scale). The BF16 sources stay mapped
// (embed_tokens is still read from them) but their pages are dropped from the process (madvise
// MADV_DONTNEED on the mapped range) once quantised, so they are no longer resident. `threads` workers
// (0 = hardware concurrency) share the work.
void quantize_decoder_int8(ModelWeights& w, int threads);

// The on-disk int8 cache: `dir` is the cache root (the int8 files go in `<root>/int8/`), empty = the
// default root ($RUSTASR_CACHE_DIR, else $XDG_CACHE_HOME/rustasr, else $HOME/.cache/rustasr: the root the
// SDK downloads models into). enabled = false: always quantise at load, never read or write a cache file.
struct Int8CacheOptions {
  bool enabled = true;
  std::string dir;
};

// The default cache root described above ("" when neither variable nor $HOME is set).
std::string default_cache_root();

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

// quant = "int4" (bits 4) or "int8" (bits 8) at load, with the same cache rules as make_decoder_int8 (the
// int4 file is another file of `<root>/int8/`: its header names int4). int4: symmetric int4 in blocks of 32
// columns (else 16) with one float32 scale per block, scale = max|w| / 7 (DType::kI4, util/tensor.h); a
// tensor whose rows cannot be split in such blocks is int8.
void make_decoder_quant(ModelWeights& w, int threads, const std::string& model_dir, const Int8CacheOptions& cache,
                        int bits);
// The quantisation of make_decoder_quant without the cache.
void quantize_decoder(ModelWeights& w, int threads, int bits);

// Process-wide allocator policy for large buffers (glibc only; once per process, on the first load):
// allocations of 1 MiB and more (activations, KV cache, packing buffers) are served by mmap and returned to
// the system when freed, instead of staying resident in per-thread malloc arenas after a session ends. Left
// alone when the user set MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES.
void tune_allocator();

}  // namespace rustasr
