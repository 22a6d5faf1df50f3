// Shared pieces of the N-API binding (addon.cpp: the production surface; dev.cpp: the test/dev surface, built
// only when RUSTASR_DEV is defined). Every model call runs on a libuv worker thread (Napi::AsyncWorker) and
// settles a Promise; the JS thread only copies buffers in and out. Errors reject with an Error whose `code` is
// the engine's stable error code name.
#pragma once

// When a worker_thread is terminated while a call is in flight, the call completes in an environment that can
// no longer run JS: settling its promise fails, and without this node-addon-api rethrows that failure out of
// the libuv completion callback, which aborts the whole process (std::terminate). Swallow it instead.
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <rustasr/engine.h>

namespace rustasr_addon {

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message);

// Runs `work` on a worker thread, then `done` on the JS thread to build the resolved value.
// Engine errors become rejections with their code; anything else is INTERNAL.
using Work = std::function<void()>;
using Done = std::function<Napi::Value(Napi::Env)>;
Napi::Value queue(Napi::Env env, Work work, Done done);

Napi::Float32Array to_f32(Napi::Env env, const std::vector<float>& v);
std::vector<float> from_f32(const Napi::Value& v, const char* what);

// Live engine objects in this process (all environments): liveObjects(), for the server's /metrics and leak checks. A model
// counts until its weights are released (its last handle or session is gone), a session until its state (KV
// cache) is freed, an aligner until its state is freed.
extern std::atomic<int64_t> g_live_models;
extern std::atomic<int64_t> g_live_sessions;
extern std::atomic<int64_t> g_live_aligners;

class SessionWrap : public Napi::ObjectWrap<SessionWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit SessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SessionWrap>(info) {}
  void attach(std::shared_ptr<const rustasr::Model> model);

  // One call at a time per session: the worker keeps its own reference, so dispose() during a call is safe.
  std::shared_ptr<rustasr::Session> acquire(Napi::Env env);
  // Clears the busy flag when the worker's call ends (constructed on the worker).
  struct Release {
    std::shared_ptr<std::atomic<bool>> busy;
    ~Release() { *busy = false; }
  };
  std::shared_ptr<std::atomic<bool>> busy() const { return busy_; }
  void release_now() { *busy_ = false; }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Truncate(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
#ifdef RUSTASR_DEV
  Napi::Value Mel(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value Prefill(const Napi::CallbackInfo& info);
  Napi::Value StepLogits(const Napi::CallbackInfo& info);
#endif

  std::shared_ptr<rustasr::Session> session_;
  std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};

#ifdef RUSTASR_DEV
// Adds the dev surface to `exports.dev` (argmax, cpuKernels, probe).
void register_dev(Napi::Env env, Napi::Object exports);
#endif

}  // namespace rustasr_addon
