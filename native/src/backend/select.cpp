// Device choice: which backends this build and machine can run, and creating one by name.
//
// cpu   - always built, always available.
// cuda  - a separate plugin library (rustasr_cuda.so, built by `npm run build:cuda`) loaded with dlopen only
//         when asked for, so the CPU build needs no CUDA libraries. See cuda_loader.cpp.
// metal - compiled into the macOS build (RUSTASR_HAVE_METAL); unverified until run on a Mac.
#include <rustasr/engine.h>

#include "backend.h"
#include "cuda_loader.h"

namespace rustasr {

#ifdef RUSTASR_HAVE_METAL
std::unique_ptr<Backend> make_metal_backend(const BackendOptions& options);  // metal/metal_backend.mm
DeviceStatus probe_metal();
#else
// The reason `rustasr devices` gives, also in the error of device "metal" (one text for both).
const char* const kNoMetal = "this build has no Metal backend (unverified: built only on macOS with RUSTASR_METAL=1)";
#endif

std::vector<DeviceStatus> probe_devices() {
  std::vector<DeviceStatus> out;
  DeviceStatus cpu;
  cpu.kind = "cpu";
  cpu.available = true;
  const std::vector<std::string> kernels = cpu_kernels();
  cpu.name = kernels.empty() ? "scalar" : kernels.front();
  out.push_back(cpu);
  out.push_back(probe_cuda());
#ifdef RUSTASR_HAVE_METAL
  out.push_back(probe_metal());
#else
  DeviceStatus metal;
  metal.kind = "metal";
  metal.reason = kNoMetal;
  out.push_back(metal);
#endif
  return out;
}

std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& options) {
  if (device == "cpu") return make_cpu_backend(options);
  if (device == "cuda") return make_cuda_backend(options);
  if (device == "metal") {
#ifdef RUSTASR_HAVE_METAL
    return make_metal_backend(options);
#else
    throw Error(ErrorCode::kUnsupportedDevice, std::string("metal: ") + kNoMetal);
#endif
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown device \"" + device + "\" (expected cpu, cuda or metal)");
}

std::unique_ptr<Backend> choose_backend(const std::string& device, const BackendOptions& bo, std::string* fallback) {
  if (device.empty() || device == "cpu") return make_cpu_backend(bo);
  if (device != "auto") return make_backend(device, bo);
  for (const DeviceStatus& d : probe_devices()) {
    if (d.kind == "cpu" || !d.available) continue;
    try {
      return make_backend(d.kind, bo);
    } catch (const Error& e) {
      *fallback = e.what();
    }
  }
  return make_cpu_backend(bo);
}

std::vector<DeviceStatus> devices() { return probe_devices(); }

}  // namespace rustasr
