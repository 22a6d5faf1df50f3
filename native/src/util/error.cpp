#include "rustasr/engine.h"

namespace rustasr {

// These strings are part of the public API (the JS layer exposes them as error codes): never rename.
const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case ErrorCode::kModelNotFound: return "MODEL_NOT_FOUND";
    case ErrorCode::kInvalidConfig: return "INVALID_CONFIG";
    case ErrorCode::kMissingTensor: return "MISSING_TENSOR";
    case ErrorCode::kTensorShape: return "TENSOR_SHAPE";
    case ErrorCode::kUnsupportedDtype: return "UNSUPPORTED_DTYPE";
    case ErrorCode::kCorruptWeights: return "CORRUPT_WEIGHTS";
    case ErrorCode::kIo: return "IO_ERROR";
    case ErrorCode::kAborted: return "ABORTED";
    case ErrorCode::kUnsupportedDevice: return "UNSUPPORTED_DEVICE";
    case ErrorCode::kInternal: return "INTERNAL";
  }
  return "INTERNAL";
}

}  // namespace rustasr
