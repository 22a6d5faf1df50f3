#include "file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rustasr {

std::string file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

namespace {

[[noreturn]] void not_regular(const std::string& path, unsigned mode) {
  throw Error(ErrorCode::kIo, path + " is not a regular file (" + file_kind(mode) + ")");
}

[[noreturn]] void missing(const std::string& path, const OpenOptions& opts) {
  throw Error(opts.missing_code, opts.missing_message.empty() ? "file not found: " + path : opts.missing_message);
}

}  // namespace

int open_regular_file(const std::string& path, uint64_t* size, const OpenOptions& opts) {
  // stat first: a FIFO, socket or device is refused without being opened (opening some devices has effects).
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      if (opts.optional) return -1;
      missing(path, opts);
    }
    throw Error(ErrorCode::kIo, "cannot stat " + path + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) not_regular(path, st.st_mode);
  // O_NONBLOCK: should the path be swapped for a FIFO meanwhile, open() still returns at once.
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      if (opts.optional) return -1;
      missing(path, opts);
    }
    throw Error(ErrorCode::kIo, "cannot open " + path + ": " + std::strerror(err));
  }
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorCode::kIo, "cannot stat " + path + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    not_regular(path, st.st_mode);
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (size) *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

std::string read_small_file(const std::string& path, size_t max_bytes, ErrorCode too_large_code,
                            const std::string& label, const OpenOptions& opts, bool* found) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, &size, opts);
  if (found) *found = fd >= 0;
  if (fd < 0) return std::string();
  auto too_large = [&](uint64_t n) {
    ::close(fd);
    throw Error(too_large_code, path + ": " + std::to_string(n) + " bytes is over the " + std::to_string(max_bytes) +
                                    "-byte limit for " + label);
  };
  if (size > max_bytes) too_large(size);
  std::string text;
  text.reserve(static_cast<size_t>(size));
  char buf[65536];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw Error(ErrorCode::kIo, "cannot read " + path + ": " + std::strerror(err));
    }
    if (r == 0) break;
    text.append(buf, static_cast<size_t>(r));
    if (text.size() > max_bytes) too_large(text.size());  // grew while being read
  }
  ::close(fd);
  return text;
}

}  // namespace rustasr
