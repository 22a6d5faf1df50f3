// Placeholder until the CUDA plugin loader lands: CUDA is reported as not built.
#include "cuda_loader.h"

#include <rustasr/engine.h>

namespace rustasr {

DeviceInfo probe_cuda() {
  DeviceInfo d;
  d.kind = "cuda";
  d.reason = "this build has no CUDA backend";
  return d;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions&) {
  throw Error(ErrorCode::kUnsupportedDevice, "cuda: this build has no CUDA backend");
}

}  // namespace rustasr
