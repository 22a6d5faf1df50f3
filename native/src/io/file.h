// Opening and reading the files of a model directory without trusting them to be regular files.
//
// A FIFO named config.json would block a plain open() until a writer appears (forever, and the process could
// not exit); a symlink to /dev/zero would be read until memory runs out. Every file of a model directory is
// therefore stat'ed first, opened with O_NONBLOCK (a FIFO that appears between the two opens at once) and
// fstat'ed again: anything but a regular file is Error(kIo) "PATH is not a regular file (a FIFO)" at once,
// before a byte is read. Symlinks are followed (a model directory may be a tree of links, as the Hugging Face
// cache is); what they point to must be a regular file. Small files are read whole with a size cap: a file
// over the cap is refused from its size before it is read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "rustasr/engine.h"

namespace rustasr {

// Caps on the metadata files of a model directory (docs/errors.md). The real files are far smaller:
// config.json ~7 KB, preprocessor_config.json ~0.4 KB, the index of a sharded 1.7B checkpoint ~60 KB.
constexpr size_t kMaxConfigBytes = size_t(16) << 20;       // config.json, preprocessor_config.json: 16 MiB
constexpr size_t kMaxIndexBytes = size_t(16) << 20;        // model.safetensors.index.json: 16 MiB

// "a FIFO", "a directory", "a character device", ... for a st_mode that is not a regular file.
std::string file_kind(unsigned mode);

// Opens `path` read-only as a regular file and returns the descriptor (O_CLOEXEC, blocking mode restored),
// its size in *size. The caller closes it.
//   * absent: returns -1 if `optional`, else throws Error(missing_code, missing_message);
//   * not a regular file (FIFO, socket, device, directory): Error(kIo, "PATH is not a regular file (a FIFO)");
//   * other OS errors: Error(kIo, "cannot open PATH: reason").
struct OpenOptions {
  bool optional = false;                         // absent -> -1 instead of throwing
  ErrorCode missing_code = ErrorCode::kModelNotFound;
  std::string missing_message;                   // default "file not found: PATH"
};
int open_regular_file(const std::string& path, uint64_t* size, const OpenOptions& opts = OpenOptions());

// Reads a regular file of at most `max_bytes` whole (open_regular_file, then read). A larger file throws
// Error(too_large_code, "PATH: N bytes is over the M-byte limit for LABEL"). *found (when given) is false
// and "" is returned for an absent optional file.
std::string read_small_file(const std::string& path, size_t max_bytes, ErrorCode too_large_code,
                            const std::string& label, const OpenOptions& opts = OpenOptions(),
                            bool* found = nullptr);

}  // namespace rustasr
