// Loading the CUDA backend plugin (rustasr_cuda.so) at run time with dlopen, so that the core (addon or
// test binary) never links CUDA. The plugin is looked for at $RUSTASR_CUDA_PLUGIN (a path) if set, else as
// rustasr_cuda.so in the directory of the loaded core:
//   build/Release/rustasr.node               -> build/Release/rustasr_cuda.so
//   prebuilds/linux-x64/rustasr.glibc.node   -> prebuilds/linux-x64/rustasr_cuda.so
//   native/tests/build/<mode>/golden_main    -> native/tests/build/<mode>/rustasr_cuda.so
// Only the three C functions of cuda/plugin_api.h are looked up. A loaded plugin is cached per path and
// never unloaded (backends it created may outlive any caller).
#include "cuda_loader.h"

#include <rustasr/engine.h>

#include <cstdlib>
#include <string>

#if defined(__linux__)
#include <dlfcn.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "cuda/plugin_api.h"
#endif

namespace rustasr {

#if defined(__linux__)

namespace {

using AbiFn = int (*)();
using ProbeFn = int (*)(int, char*, size_t, char*, size_t);
using CreateFn = Backend* (*)(const BackendOptions*, char*, size_t);

struct Plugin {
  AbiFn abi = nullptr;
  ProbeFn probe = nullptr;
  CreateFn create = nullptr;
};

// A function of the core, for dladdr.
void core_anchor() {}

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string core_file() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&core_anchor), &info) != 0 && info.dli_fname && *info.dli_fname) {
    char buf[PATH_MAX];
    if (realpath(info.dli_fname, buf)) return buf;
    // A relative dli_fname (the main program as argv[0]) after a chdir: fall through to /proc/self/exe.
    if (info.dli_fname[0] == '/') return info.dli_fname;
  }
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    return exe;
  }
  return std::string();
}

std::string plugin_path() {
  const char* env = std::getenv("RUSTASR_CUDA_PLUGIN");
  if (env && *env) return env;
  const std::string core = core_file();
  return (core.empty() ? std::string(".") : dir_of(core)) + "/rustasr_cuda.so";
}

// Loads (once per path) and returns the plugin, or nullptr with *why set.
const Plugin* load_plugin(std::string* why) {
  static std::mutex mu;
  static std::map<std::string, Plugin>* loaded = new std::map<std::string, Plugin>();  // never freed
  const std::string path = plugin_path();
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded->find(path);
  if (it != loaded->end()) return &it->second;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    *why = "CUDA plugin not installed (" + path + " not found; build it with `npm run build:cuda`)";
    return nullptr;
  }
  dlerror();
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    *why = "cannot load the CUDA plugin " + path + ": " + (e ? e : "dlopen failed");
    return nullptr;
  }
  Plugin p;
  p.abi = reinterpret_cast<AbiFn>(dlsym(h, "rustasr_plugin_abi"));
  p.probe = reinterpret_cast<ProbeFn>(dlsym(h, "rustasr_plugin_probe"));
  p.create = reinterpret_cast<CreateFn>(dlsym(h, "rustasr_plugin_create"));
  if (!p.abi || !p.probe || !p.create) {
    *why = path + " is not a rustasr CUDA plugin (rustasr_plugin_abi / _probe / _create missing)";
    return nullptr;  // (left loaded: dlclose of a library whose initialisers ran is not worth the risk)
  }
  const int abi = p.abi();
  if (abi != RUSTASR_CUDA_PLUGIN_ABI) {
    *why = "CUDA plugin " + path + " has ABI " + std::to_string(abi) + ", this build needs " +
           std::to_string(RUSTASR_CUDA_PLUGIN_ABI) + " (rebuild it with `npm run build:cuda`)";
    return nullptr;
  }
  return &loaded->emplace(path, p).first->second;
}

}  // namespace

DeviceStatus probe_cuda() {
  DeviceStatus d;
  d.kind = "cuda";
  try {
    std::string why;
    const Plugin* p = load_plugin(&why);
    if (!p) {
      d.reason = why;
      return d;
    }
    char name[256] = {0}, reason[1024] = {0};
    d.available = p->probe(0, name, sizeof name, reason, sizeof reason) == 1;
    name[sizeof name - 1] = '\0';
    reason[sizeof reason - 1] = '\0';
    if (d.available)
      d.name = name;
    else
      d.reason = reason[0] ? reason : "CUDA device not usable (no reason given by the plugin)";
  } catch (const std::exception& e) {
    d.available = false;
    d.reason = std::string("CUDA probe failed: ") + e.what();
  }
  return d;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  std::string why;
  const Plugin* p = load_plugin(&why);
  if (!p) throw Error(ErrorCode::kUnsupportedDevice, "cuda: " + why);
  char name[256] = {0}, reason[1024] = {0};
  if (p->probe(options.device_index, name, sizeof name, reason, sizeof reason) != 1) {
    reason[sizeof reason - 1] = '\0';
    throw Error(ErrorCode::kUnsupportedDevice,
                std::string("cuda: ") + (reason[0] ? reason : "CUDA device not usable"));
  }
  char err[1024] = {0};
  Backend* b = p->create(&options, err, sizeof err);
  if (!b) {
    err[sizeof err - 1] = '\0';
    const std::string e = err[0] ? err : "the CUDA plugin could not create a backend";
    throw Error(ErrorCode::kUnsupportedDevice, e.rfind("cuda:", 0) == 0 ? e : "cuda: " + e);
  }
  return std::unique_ptr<Backend>(b);
}

#else  // not Linux

namespace {
const char* unsupported_reason() {
#if defined(__APPLE__)
  return "CUDA is not supported on macOS";
#else
  return "CUDA is supported on Linux only";
#endif
}
}  // namespace

DeviceStatus probe_cuda() {
  DeviceStatus d;
  d.kind = "cuda";
  d.reason = unsupported_reason();
  return d;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions&) {
  throw Error(ErrorCode::kUnsupportedDevice, std::string("cuda: ") + unsupported_reason());
}

#endif

}  // namespace rustasr
