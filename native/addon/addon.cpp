// N-API binding: a thin layer over rustasr/engine.h. Every model call runs on a libuv worker thread
// (Napi::AsyncWorker) and settles a Promise; the JS thread only copies buffers in and out.
// Errors reject with an Error whose `code` is the engine's stable error code name.
// When a worker_thread is terminated while a call is in flight, the call completes in an environment that can
// no longer run JS: settling its promise fails, and without this node-addon-api rethrows that failure out of
// the libuv completion callback, which aborts the whole process (std::terminate). Swallow it instead.
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#include <napi.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <rustasr/engine.h>

#include "backend/cpu/probe.h"

namespace {

using rustasr::Error;
using rustasr::ErrorCode;

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Value().Set("code", Napi::String::New(env, code));
  return err;
}

// Runs `work` on a worker thread, then `done` on the JS thread to build the resolved value.
// Engine errors become rejections with their code; anything else is INTERNAL.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  PromiseWorker(Napi::Env env, Work work, Done done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        done_(std::move(done)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      work_();
    } catch (const Error& e) {
      code_ = rustasr::error_code_name(e.code());
      message_ = e.what();
    } catch (const std::bad_alloc&) {
      code_ = "INTERNAL";
      message_ = "out of memory";
    } catch (const std::exception& e) {
      code_ = "INTERNAL";
      message_ = e.what();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (code_) {
      deferred_.Reject(make_error(env, code_, message_).Value());
      return;
    }
    try {
      deferred_.Resolve(done_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  const char* code_ = nullptr;
  std::string message_;
};

Napi::Value queue(Napi::Env env, PromiseWorker::Work work, PromiseWorker::Done done) {
  auto* w = new PromiseWorker(env, std::move(work), std::move(done));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Float32Array to_f32(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

std::vector<float> from_f32(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw make_error(v.Env(), "INVALID_ARGUMENT", std::string(what) + " must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

// ------------------------------------------------------------------------------------------------

// Live engine objects in this process (all environments), for leak checks: liveObjects() -> {models, sessions}.
// A model counts until its weights are released (its last handle or session is gone), a session until its
// state (KV cache) is freed.
std::atomic<int64_t> g_live_models{0};
std::atomic<int64_t> g_live_sessions{0};

// Holds a loaded model; counted from attach to the release of the last reference.
struct CountedModel {
  std::shared_ptr<const rustasr::Model> model;
  explicit CountedModel(std::shared_ptr<const rustasr::Model> m) : model(std::move(m)) { ++g_live_models; }
  ~CountedModel() {
    model.reset();
    --g_live_models;
  }
};

std::shared_ptr<const rustasr::Model> counted_model(std::shared_ptr<const rustasr::Model> m) {
  auto holder = std::make_shared<CountedModel>(std::move(m));
  const rustasr::Model* raw = holder->model.get();
  return std::shared_ptr<const rustasr::Model>(std::move(holder), raw);  // aliasing: shares the holder's count
}

// Per-environment constructors (the addon may be loaded by several worker_threads).
struct AddonData {
  Napi::FunctionReference session_ctor;
  Napi::FunctionReference model_ctor;
};

class SessionWrap : public Napi::ObjectWrap<SessionWrap> {
 public:

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeSession",
                       {InstanceMethod("mel", &SessionWrap::Mel), InstanceMethod("encode", &SessionWrap::Encode),
                        InstanceMethod("prefill", &SessionWrap::Prefill), InstanceMethod("step", &SessionWrap::Step),
                        InstanceMethod("dispose", &SessionWrap::Dispose)});
  }

  explicit SessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SessionWrap>(info) {}

  void attach(std::shared_ptr<const rustasr::Model> model) {
    auto* raw = new rustasr::Session(std::move(model));
    ++g_live_sessions;
    session_ = std::shared_ptr<rustasr::Session>(raw, [](rustasr::Session* s) {
      delete s;
      --g_live_sessions;
    });
  }

 private:
  // One call at a time per session: the worker keeps its own reference, so dispose() during a call is safe.
  std::shared_ptr<rustasr::Session> acquire(Napi::Env env) {
    if (!session_) throw make_error(env, "INVALID_ARGUMENT", "the session has been disposed");
    if (busy_->exchange(true)) throw make_error(env, "INVALID_ARGUMENT", "the session is busy with another call");
    return session_;
  }

  Napi::Value Mel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto samples = std::make_shared<std::vector<float>>(from_f32(info[0], "samples"));
    auto s = acquire(env);
    auto out = std::make_shared<std::vector<float>>();
    auto busy = busy_;
    return queue(
        env, [s, samples, out, busy] {
          struct Release { std::shared_ptr<std::atomic<bool>> b; ~Release() { *b = false; } } r{busy};
          *out = s->mel(samples->data(), samples->size());
        },
        [out, s](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          const size_t bins = static_cast<size_t>(rustasr::model_info(s->model()).num_mel_bins);
          o.Set("data", to_f32(env, *out));
          o.Set("frames", Napi::Number::New(env, static_cast<double>(out->size() / bins)));
          return o;
        });
  }

  Napi::Value Encode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto mel = std::make_shared<std::vector<float>>(from_f32(info[0], "mel"));
    if (!info[1].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "frames must be a number");
    const int64_t frames = info[1].As<Napi::Number>().Int64Value();
    const bool keep = info.Length() > 2 && info[2].ToBoolean().Value();
    auto s = acquire(env);
    const size_t bins = static_cast<size_t>(rustasr::model_info(s->model()).num_mel_bins);
    if (frames <= 0 || mel->size() != bins * static_cast<size_t>(frames)) {
      *busy_ = false;
      throw make_error(env, "INVALID_ARGUMENT", "mel must hold num_mel_bins * frames values");
    }
    auto out = std::make_shared<rustasr::EncoderOutputs>();
    auto busy = busy_;
    return queue(
        env, [s, mel, frames, keep, out, busy] {
          struct Release { std::shared_ptr<std::atomic<bool>> b; ~Release() { *b = false; } } r{busy};
          *out = s->encode(mel->data(), frames, keep);
        },
        [out, keep](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("nTokens", Napi::Number::New(env, out->n_tokens));
          o.Set("embeds", to_f32(env, out->embeds));
          if (keep) {
            o.Set("convPos", to_f32(env, out->conv_pos));
            o.Set("lnPost", to_f32(env, out->ln_post));
          }
          return o;
        });
  }

  Napi::Value Prefill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw make_error(env, "INVALID_ARGUMENT", "ids must be an Int32Array");
    Napi::Int32Array ids_a = info[0].As<Napi::Int32Array>();
    auto ids = std::make_shared<std::vector<int32_t>>(ids_a.Data(), ids_a.Data() + ids_a.ElementLength());
    auto embeds = std::make_shared<std::vector<float>>(from_f32(info[1], "audioEmbeds"));
    auto s = acquire(env);
    const size_t hidden = static_cast<size_t>(rustasr::model_info(s->model()).hidden_size);
    if (embeds->size() % hidden != 0) {
      *busy_ = false;
      throw make_error(env, "INVALID_ARGUMENT", "audioEmbeds must hold a whole number of hidden_size rows");
    }
    auto logits = std::make_shared<std::vector<float>>();
    auto hidden_last = std::make_shared<std::vector<float>>();
    auto busy = busy_;
    return queue(
        env, [s, ids, embeds, hidden, logits, hidden_last, busy] {
          struct Release { std::shared_ptr<std::atomic<bool>> b; ~Release() { *b = false; } } r{busy};
          *logits = s->prefill(ids->data(), static_cast<int64_t>(ids->size()), embeds->data(),
                               static_cast<int64_t>(embeds->size() / hidden), hidden_last.get());
        },
        [logits, hidden_last](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("id", Napi::Number::New(env, rustasr::argmax(logits->data(), static_cast<int64_t>(logits->size()))));
          o.Set("logits", to_f32(env, *logits));
          o.Set("hiddenLast", to_f32(env, *hidden_last));
          return o;
        });
  }

  // step(token, wantLogits = false) -> { id, logits? }
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "token must be a number");
    const int64_t tok64 = info[0].As<Napi::Number>().Int64Value();
    if (tok64 < 0 || tok64 > INT32_MAX) throw make_error(env, "INVALID_ARGUMENT", "token id out of range");
    const int32_t token = static_cast<int32_t>(tok64);
    const bool want_logits = info.Length() > 1 && info[1].ToBoolean().Value();
    auto s = acquire(env);
    // Greedy steps (no logits wanted) take the argmax on the worker and copy nothing out.
    auto logits = std::make_shared<std::vector<float>>();
    auto id = std::make_shared<int32_t>(0);
    auto busy = busy_;
    return queue(
        env, [s, token, logits, id, want_logits, busy] {
          struct Release { std::shared_ptr<std::atomic<bool>> b; ~Release() { *b = false; } } r{busy};
          if (want_logits) {
            *logits = s->step(token);
            *id = rustasr::argmax(logits->data(), static_cast<int64_t>(logits->size()));
          } else {
            *id = s->step_greedy(token);
          }
        },
        [logits, id, want_logits](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("id", Napi::Number::New(env, *id));
          if (want_logits) o.Set("logits", to_f32(env, *logits));
          return o;
        });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    session_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<rustasr::Session> session_;
  std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:

  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("info", &ModelWrap::Info), InstanceMethod("createSession", &ModelWrap::CreateSession),
                        InstanceMethod("dispose", &ModelWrap::Dispose)});
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}
  void attach(std::shared_ptr<const rustasr::Model> m) { model_ = std::move(m); }

 private:
  const rustasr::Model& model(Napi::Env env) {
    if (!model_) throw make_error(env, "INVALID_ARGUMENT", "the model has been disposed");
    return *model_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const rustasr::ModelInfo mi = rustasr::model_info(model(env));
    Napi::Object o = Napi::Object::New(env);
    o.Set("numMelBins", mi.num_mel_bins);
    o.Set("encoderDModel", mi.encoder_d_model);
    o.Set("encoderLayers", mi.encoder_layers);
    o.Set("audioOutputDim", mi.audio_output_dim);
    o.Set("hiddenSize", mi.hidden_size);
    o.Set("decoderLayers", mi.decoder_layers);
    o.Set("vocabSize", mi.vocab_size);
    o.Set("audioTokenId", mi.audio_token_id);
    o.Set("audioStartTokenId", mi.audio_start_token_id);
    o.Set("audioEndTokenId", mi.audio_end_token_id);
    o.Set("tiedEmbeddings", mi.tied_embeddings);
    o.Set("sampleRate", mi.sample_rate);
    o.Set("hopLength", mi.hop_length);
    Napi::Array langs = Napi::Array::New(env, mi.support_languages.size());
    for (size_t i = 0; i < mi.support_languages.size(); ++i) langs.Set(static_cast<uint32_t>(i), mi.support_languages[i]);
    o.Set("supportLanguages", langs);
    o.Set("kernel", mi.kernel);
    o.Set("threads", mi.threads);
    o.Set("quant", mi.quant);
    o.Set("int8Cache", rustasr::int8_cache_state(model(env)));
    o.Set("largePages", mi.large_pages);
    o.Set("device", mi.device);
    o.Set("deviceName", mi.device_name);
    o.Set("deviceFallback", mi.device_fallback);
    return o;
  }

  Napi::Value CreateSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    model(env);
    Napi::Object obj = env.GetInstanceData<AddonData>()->session_ctor.New({});
    SessionWrap::Unwrap(obj)->attach(model_);
    return obj;
  }

  // Drops this handle's reference; sessions keep theirs, so the weights are unmapped after the last one ends.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<const rustasr::Model> model_;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // A string, or a Buffer holding the path's bytes (a name that is not valid UTF-8).
  std::string dir;
  if (info[0].IsString()) {
    dir = info[0].As<Napi::String>().Utf8Value();
  } else if (info[0].IsBuffer()) {
    Napi::Buffer<char> b = info[0].As<Napi::Buffer<char>>();
    dir.assign(b.Data(), b.Length());
  } else {
    throw make_error(env, "INVALID_ARGUMENT", "model directory must be a string or a Buffer");
  }
  if (dir.empty() || dir.find('\0') != std::string::npos)
    throw make_error(env, "INVALID_ARGUMENT", "model directory must be non-empty and hold no NUL byte");
  rustasr::ModelParams params;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    if (o.Has("threads") && !o.Get("threads").IsUndefined()) {
      Napi::Value t = o.Get("threads");
      if (!t.IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "threads must be a number");
      params.threads = t.As<Napi::Number>().Int32Value();
    }
    if (o.Has("kernel") && !o.Get("kernel").IsUndefined()) {
      Napi::Value k = o.Get("kernel");
      if (!k.IsString()) throw make_error(env, "INVALID_ARGUMENT", "kernel must be a string");
      params.kernel = k.As<Napi::String>().Utf8Value();
    }
    if (o.Has("quant") && !o.Get("quant").IsUndefined()) {
      Napi::Value q = o.Get("quant");
      if (!q.IsString()) throw make_error(env, "INVALID_ARGUMENT", "quant must be a string");
      params.quant = q.As<Napi::String>().Utf8Value();
    }
    if (o.Has("lowMemory") && !o.Get("lowMemory").IsUndefined()) {
      Napi::Value v = o.Get("lowMemory");
      if (!v.IsBoolean()) throw make_error(env, "INVALID_ARGUMENT", "lowMemory must be a boolean");
      params.low_memory = v.As<Napi::Boolean>().Value();
    }
    if (o.Has("largePages") && !o.Get("largePages").IsUndefined()) {
      Napi::Value v = o.Get("largePages");
      if (!v.IsBoolean()) throw make_error(env, "INVALID_ARGUMENT", "largePages must be a boolean");
      params.large_pages = v.As<Napi::Boolean>().Value();
    }
    // cacheDir: a directory, or false for no int8 cache.
    if (o.Has("cacheDir") && !o.Get("cacheDir").IsUndefined()) {
      Napi::Value c = o.Get("cacheDir");
      if (c.IsBoolean() && !c.As<Napi::Boolean>().Value()) {
        params.int8_cache = false;
      } else if (c.IsString()) {
        params.cache_dir = c.As<Napi::String>().Utf8Value();
        if (params.cache_dir.find('\0') != std::string::npos)
          throw make_error(env, "INVALID_ARGUMENT", "cacheDir must hold no NUL byte");
      } else {
        throw make_error(env, "INVALID_ARGUMENT", "cacheDir must be a string or false");
      }
    }
    if (o.Has("device") && !o.Get("device").IsUndefined()) {
      Napi::Value d = o.Get("device");
      if (!d.IsString()) throw make_error(env, "INVALID_ARGUMENT", "device must be a string");
      params.device = d.As<Napi::String>().Utf8Value();
    }
    if (o.Has("deviceIndex") && !o.Get("deviceIndex").IsUndefined()) {
      Napi::Value d = o.Get("deviceIndex");
      if (!d.IsNumber() || d.As<Napi::Number>().DoubleValue() < 0)
        throw make_error(env, "INVALID_ARGUMENT", "deviceIndex must be a number >= 0");
      params.device_index = d.As<Napi::Number>().Int32Value();
    }
  }
  auto out = std::make_shared<std::shared_ptr<const rustasr::Model>>();
  return queue(
      env, [dir, params, out] { *out = rustasr::load_model(dir, params); },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object obj = env.GetInstanceData<AddonData>()->model_ctor.New({});
        ModelWrap::Unwrap(obj)->attach(counted_model(std::move(*out)));
        return obj;
      });
}

Napi::Value Argmax(const Napi::CallbackInfo& info) {
  std::vector<float> v = from_f32(info[0], "values");
  if (v.empty()) throw make_error(info.Env(), "INVALID_ARGUMENT", "argmax of an empty array");
  return Napi::Number::New(info.Env(), rustasr::argmax(v.data(), static_cast<int64_t>(v.size())));
}

Napi::Value CpuFeatures(const Napi::CallbackInfo& info) {
  std::vector<std::string> f = rustasr::cpu_kernels();
  Napi::Array a = Napi::Array::New(info.Env(), f.size());
  for (size_t i = 0; i < f.size(); ++i) a.Set(static_cast<uint32_t>(i), f[i]);
  return a;
}

// devices() -> Promise<[{ kind, available, name, reason }]>: cpu, cuda, metal as probed here (probing a GPU
// loads its driver, so it runs off the main thread).
Napi::Value Devices(const Napi::CallbackInfo& info) {
  auto out = std::make_shared<std::vector<rustasr::DeviceStatus>>();
  return queue(
      info.Env(), [out] { *out = rustasr::devices(); },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out->size());
        for (size_t i = 0; i < out->size(); ++i) {
          const rustasr::DeviceStatus& d = (*out)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("kind", d.kind);
          o.Set("available", d.available);
          o.Set("name", d.name);
          o.Set("reason", d.reason);
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      });
}

Napi::Value LiveObjects(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("models", Napi::Number::New(info.Env(), static_cast<double>(g_live_models.load())));
  o.Set("sessions", Napi::Number::New(info.Env(), static_cast<double>(g_live_sessions.load())));
  return o;
}

// probe({ threads?, kernel?, bandwidthBytes?, bandwidthReps?, gemm?: [{ impl, n, rows, cols }], gemmReps? })
// -> Promise<{ blas, bandwidth?: { threads, bytes, isa, seconds[] }, gemm: [{ impl, isa, threads, n, rows, cols,
// flops, seconds[] }] }>: the machine floors for `npm run bench` (native/src/backend/cpu/probe.h).
// bandwidthBytes = 0 skips the bandwidth probe.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct Shape {
    std::string impl;
    int64_t n, rows, cols;
  };
  struct Args {
    int threads = 0;
    std::string kernel = "auto";
    int64_t bw_bytes = int64_t(1) << 30;
    int bw_reps = 5;
    int gemm_reps = 3;
    std::vector<Shape> shapes;
  };
  auto args = std::make_shared<Args>();
  auto num = [&](const Napi::Object& o, const char* key, double def) -> double {
    if (!o.Has(key) || o.Get(key).IsUndefined()) return def;
    if (!o.Get(key).IsNumber()) throw make_error(env, "INVALID_ARGUMENT", std::string(key) + " must be a number");
    return o.Get(key).As<Napi::Number>().DoubleValue();
  };
  if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Object o = info[0].As<Napi::Object>();
    args->threads = static_cast<int>(num(o, "threads", 0));
    args->bw_bytes = static_cast<int64_t>(num(o, "bandwidthBytes", static_cast<double>(args->bw_bytes)));
    args->bw_reps = static_cast<int>(num(o, "bandwidthReps", args->bw_reps));
    args->gemm_reps = static_cast<int>(num(o, "gemmReps", args->gemm_reps));
    if (o.Has("kernel") && o.Get("kernel").IsString()) args->kernel = o.Get("kernel").As<Napi::String>().Utf8Value();
    if (o.Has("gemm") && o.Get("gemm").IsArray()) {
      Napi::Array a = o.Get("gemm").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        if (!a.Get(i).IsObject()) throw make_error(env, "INVALID_ARGUMENT", "gemm entries must be objects");
        Napi::Object g = a.Get(i).As<Napi::Object>();
        Shape s;
        s.impl = g.Has("impl") && g.Get("impl").IsString() ? g.Get("impl").As<Napi::String>().Utf8Value() : "auto";
        s.n = static_cast<int64_t>(num(g, "n", 1024));
        s.rows = static_cast<int64_t>(num(g, "rows", 4096));
        s.cols = static_cast<int64_t>(num(g, "cols", 1024));
        args->shapes.push_back(s);
      }
    }
  }
  auto blas = std::make_shared<std::string>();
  auto bw = std::make_shared<rustasr::cpu::BandwidthProbe>();
  auto gemms = std::make_shared<std::vector<rustasr::cpu::GemmProbe>>();
  return queue(
      env,
      [args, blas, bw, gemms] {
        *blas = rustasr::cpu::probe_blas_info();
        if (args->bw_bytes > 0) *bw = rustasr::cpu::probe_read_bandwidth(args->threads, args->bw_bytes, args->bw_reps);
        for (const Shape& s : args->shapes)
          gemms->push_back(rustasr::cpu::probe_gemm(args->threads, args->kernel, s.impl, s.n, s.rows, s.cols, args->gemm_reps));
      },
      [blas, bw, gemms](Napi::Env env) -> Napi::Value {
        auto secs = [&](const std::vector<double>& v) {
          Napi::Array a = Napi::Array::New(env, v.size());
          for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), v[i]);
          return a;
        };
        Napi::Object o = Napi::Object::New(env);
        o.Set("blas", *blas);
        if (bw->bytes > 0) {
          Napi::Object b = Napi::Object::New(env);
          b.Set("threads", bw->threads);
          b.Set("bytes", static_cast<double>(bw->bytes));
          b.Set("isa", bw->isa);
          b.Set("seconds", secs(bw->seconds));
          o.Set("bandwidth", b);
        }
        Napi::Array ga = Napi::Array::New(env, gemms->size());
        for (size_t i = 0; i < gemms->size(); ++i) {
          const rustasr::cpu::GemmProbe& g = (*gemms)[i];
          Napi::Object r = Napi::Object::New(env);
          r.Set("impl", g.impl);
          r.Set("isa", g.isa);
          r.Set("threads", g.threads);
          r.Set("n", static_cast<double>(g.n));
          r.Set("rows", static_cast<double>(g.rows));
          r.Set("cols", static_cast<double>(g.cols));
          r.Set("flops", g.flops);
          r.Set("seconds", secs(g.seconds));
          ga.Set(static_cast<uint32_t>(i), r);
        }
        o.Set("gemm", ga);
        return o;
      });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->session_ctor = Napi::Persistent(SessionWrap::Init(env));
  data->model_ctor = Napi::Persistent(ModelWrap::Init(env));
  env.SetInstanceData<AddonData>(data);  // deleted by N-API when the environment ends
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("argmax", Napi::Function::New(env, Argmax));
  exports.Set("cpuKernels", Napi::Function::New(env, CpuFeatures));
  exports.Set("devices", Napi::Function::New(env, Devices));
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("liveObjects", Napi::Function::New(env, LiveObjects));
  return exports;
}

}  // namespace

NODE_API_MODULE(rustasr, Init)
