// The C entry points of the CUDA backend plugin (rustasr_cuda.so). The core (addon or test binary) loads the
// plugin with dlopen only when a CUDA device is asked for or probed (native/src/backend/cuda_loader.cpp), so
// the CPU build needs no CUDA library at all. Plugin and core are built from the same sources by the same
// compiler family: rustasr::Backend and rustasr::BackendOptions cross the boundary as C++ objects.
//
// None of these functions throws. Ops of a created backend throw rustasr::Error like any backend.
#pragma once

#include <cstddef>

#include "../backend.h"

// Bumped whenever backend.h's Backend class or BackendOptions change layout; the loader refuses a plugin
// reporting another value. 2: Backend::attention_rows and Backend::realloc_keep (batched decode attention,
// KV cache growth).
#define RUSTASR_CUDA_PLUGIN_ABI 2

extern "C" {

// Returns RUSTASR_CUDA_PLUGIN_ABI as compiled into the plugin.
int rustasr_plugin_abi(void);

// Probes CUDA device `index`: returns 1 and writes its name (NUL-terminated, truncated to name_len) when it
// is usable, else 0 with the reason (no driver, driver too old, no device, compute capability below 7.5...).
int rustasr_plugin_probe(int index, char* name, size_t name_len, char* reason, size_t reason_len);

// Creates the backend on options->device_index. On failure returns nullptr and writes the reason to err.
// The caller owns the result (delete through the virtual destructor: the plugin stays loaded for the life
// of the process).
rustasr::Backend* rustasr_plugin_create(const rustasr::BackendOptions* options, char* err, size_t err_len);

}  // extern "C"
