// Loading the CUDA backend plugin (rustasr_cuda.so) at run time. The plugin exports three C functions
// (declared in cuda/plugin_api.h); the core never links CUDA itself.
#pragma once

#include <memory>

#include "backend.h"

namespace rustasr {

// Where the plugin is looked for, first match wins: $RUSTASR_CUDA_PLUGIN (a path), then the directory of the
// loaded core library (the addon's .node or the test binary): rustasr_cuda.so.
DeviceStatus probe_cuda();
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);

}  // namespace rustasr
