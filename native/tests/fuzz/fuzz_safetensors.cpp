// libFuzzer target: safetensors header and offset validation (io/safetensors.cpp).
//
// The input is written to a memfd and opened with SafetensorsArchive::open through /proc/self/fd, i.e. the
// real open + fstat + mmap path. It must either be rejected with Error(kCorruptWeights) or be accepted; an
// accepted archive is then checked against an independent reading of the same bytes: every tensor's
// [begin, end) from the header lies inside the data section, nbytes == end - begin, and the bytes at
// TensorInfo::data equal the input bytes at 8 + N + begin (memcmp touches every byte of every tensor, so an
// out-of-bounds view faults or mismatches). aligned_data() copies must be aligned and equal too.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "io/safetensors.h"
#include "rustasr/engine.h"
#include "util/json.h"

namespace {

[[noreturn]] void die(const char* why, const std::string& detail = "") {
  std::fprintf(stderr, "fuzz_safetensors: %s %s\n", why, detail.c_str());
  std::abort();
}

int memfd() {
  static int fd = [] {
    int f = ::memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    if (f < 0) die("memfd_create failed");
    return f;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd();
  if (::ftruncate(fd, 0) != 0) die("ftruncate");
  for (size_t off = 0; off < size;) {
    const ssize_t w = ::pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    if (w <= 0) die("pwrite");
    off += static_cast<size_t>(w);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);

  std::shared_ptr<rustasr::SafetensorsArchive> a;
  try {
    a = rustasr::SafetensorsArchive::open(path);
  } catch (const rustasr::Error& e) {
    if (e.code() != rustasr::ErrorCode::kCorruptWeights) die("error code other than kCorruptWeights:", e.what());
    return 0;
  }

  // Accepted: re-read the header independently.
  if (size < 8) die("accepted a file shorter than 8 bytes");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8) die("accepted a header length beyond the file");
  if (a->file_size() != size) die("file_size");
  const uint64_t data_size = size - 8 - n;
  const uint8_t* section = data + 8 + n;
  rustasr::JsonValue root;
  try {
    root = rustasr::parse_json(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n));
  } catch (const rustasr::JsonParseError&) {
    die("accepted a header that is not JSON");
  }
  if (!root.is_object()) die("accepted a non-object header");
  size_t expected = root.size() - (root.get("__metadata__") ? 1 : 0);
  if (a->tensors().size() != expected) die("tensor count differs from the header");

  for (const rustasr::TensorInfo& t : a->tensors()) {
    const rustasr::JsonValue* e = root.get(t.name);
    if (!e || t.name == "__metadata__") die("tensor not in header:", t.name);
    const rustasr::JsonValue* offs = e->get("data_offsets");
    if (!offs || !offs->is_array() || offs->size() != 2 || !offs->at(0).is_integer() || !offs->at(1).is_integer())
      die("accepted bad data_offsets:", t.name);
    const int64_t b = offs->at(0).as_int64(), end = offs->at(1).as_int64();
    if (b < 0 || end < b || static_cast<uint64_t>(end) > data_size) die("accepted out-of-range offsets:", t.name);
    if (t.nbytes != static_cast<uint64_t>(end - b)) die("nbytes != end - begin:", t.name);
    if (t.nbytes && std::memcmp(t.data, section + b, t.nbytes) != 0) die("tensor view does not match its bytes:", t.name);
    if (a->find(t.name) != &t) die("find() does not return the tensor:", t.name);
    if (t.known_dtype) {
      const uint64_t bits = static_cast<uint64_t>(rustasr::safetensors_dtype_bits(t.dtype_str));
      if (t.numel * bits != static_cast<uint64_t>(t.nbytes) * 8) die("size check missed:", t.name);
    }
    if (t.supported) {
      const void* p = a->aligned_data(t);
      if (reinterpret_cast<uintptr_t>(p) % rustasr::dtype_size(t.dtype) != 0) die("aligned_data is misaligned");
      if (t.nbytes && std::memcmp(p, section + b, t.nbytes) != 0) die("aligned_data differs:", t.name);
      if (a->aligned_data(t) != p) die("aligned_data not stable");
    }
  }
  return 0;
}
