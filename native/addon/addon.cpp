// N-API binding: a thin layer over rustasr/engine.h (see common.h). The production surface:
//   loadModel(dir, opts) -> Promise<NativeModel>;  devices() -> Promise<DeviceStatus[]>;  liveObjects()
//   NativeModel: info(), createSession(), createAligner(), dispose()
//   NativeAligner: align(samples, textIds) -> Promise<slot classes>, dispose()
//   NativeSession: start(samples, head, tail, opts) -> Promise<first id + facts>, step(id) -> Promise<{ id }>,
//                  cancel(), dispose()
// A segment crosses once: its samples and prompt pieces go in with start(), its first token comes out; then
// one step per token. Stage-by-stage calls, logits and machine probes are the dev surface (dev.cpp).
#include "common.h"

#include <cstring>
#include <utility>

namespace rustasr_addon {

using rustasr::Error;

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Value().Set("code", Napi::String::New(env, code));
  return err;
}

namespace {

class PromiseWorker : public Napi::AsyncWorker {
 public:
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

}  // namespace

Napi::Value queue(Napi::Env env, Work work, Done done) {
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

std::atomic<int64_t> g_live_models{0};
std::atomic<int64_t> g_live_sessions{0};
std::atomic<int64_t> g_live_aligners{0};  // forced-aligner states (AlignerWrap)

namespace {

std::vector<int32_t> from_i32(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw make_error(v.Env(), "INVALID_ARGUMENT", std::string(what) + " must be an Int32Array");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

bool bool_option(const Napi::Object& o, const char* key, bool def) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return def;
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw make_error(o.Env(), "INVALID_ARGUMENT", std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

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
  Napi::FunctionReference aligner_ctor;
};

}  // namespace

// ------------------------------------------------------------------------------------------------ Session

Napi::Function SessionWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeSession",
                     {InstanceMethod("start", &SessionWrap::Start), InstanceMethod("step", &SessionWrap::Step),
                      InstanceMethod("cancel", &SessionWrap::Cancel), InstanceMethod("truncate", &SessionWrap::Truncate),
                      InstanceMethod("dispose", &SessionWrap::Dispose),
#ifdef RUSTASR_DEV
                      InstanceMethod("mel", &SessionWrap::Mel), InstanceMethod("encode", &SessionWrap::Encode),
                      InstanceMethod("prefill", &SessionWrap::Prefill),
                      InstanceMethod("stepLogits", &SessionWrap::StepLogits),
#endif
                     });
}

void SessionWrap::attach(std::shared_ptr<const rustasr::Model> model) {
  auto* raw = new rustasr::Session(std::move(model));
  ++g_live_sessions;
  session_ = std::shared_ptr<rustasr::Session>(raw, [](rustasr::Session* s) {
    delete s;
    --g_live_sessions;
  });
}

std::shared_ptr<rustasr::Session> SessionWrap::acquire(Napi::Env env) {
  if (!session_) throw make_error(env, "INVALID_ARGUMENT", "the session has been disposed");
  if (busy_->exchange(true)) throw make_error(env, "INVALID_ARGUMENT", "the session is busy with another call");
  return session_;
}

// start(samples: Float32Array | null, head: Int32Array, tail: Int32Array,
//       { reset?: boolean, incremental?: boolean, keepAudio?: boolean })
//   -> Promise<{ id, audioTokens, promptTokens, reusedTokens, encodedTokens, cachedTokens, melMs, encoderMs, prefillMs }>
// reset (default true): a new segment first. samples are appended to the segment. keepAudio (default false):
// keep the segment's audio for a later start() (live modes); otherwise it is freed once the prompt has run.
Napi::Value SessionWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto samples = std::make_shared<std::vector<float>>();
  if (!info[0].IsNull() && !info[0].IsUndefined()) *samples = from_f32(info[0], "samples");
  auto head = std::make_shared<std::vector<int32_t>>(from_i32(info[1], "head"));
  auto tail = std::make_shared<std::vector<int32_t>>(from_i32(info[2], "tail"));
  bool reset = true, keep = false;
  rustasr::StartOptions opt;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    reset = bool_option(o, "reset", true);
    keep = bool_option(o, "keepAudio", false);
    opt.incremental = bool_option(o, "incremental", false);
  }
  auto s = acquire(env);
  auto out = std::make_shared<rustasr::StartResult>();
  auto busy = busy_;
  return queue(
      env,
      [s, samples, head, tail, reset, keep, opt, out, busy] {
        Release r{busy};
        if (reset) s->reset_audio();
        s->append_audio(std::move(*samples));
        struct Drop {
          rustasr::Session* s;
          bool keep;
          ~Drop() {
            if (!keep) s->reset_audio();
          }
        } drop{s.get(), keep};
        *out = s->start(head->data(), static_cast<int64_t>(head->size()), tail->data(),
                        static_cast<int64_t>(tail->size()), opt);
      },
      [out](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", Napi::Number::New(env, out->token));
        o.Set("audioTokens", Napi::Number::New(env, static_cast<double>(out->audio_tokens)));
        o.Set("promptTokens", Napi::Number::New(env, static_cast<double>(out->prompt_tokens)));
        o.Set("reusedTokens", Napi::Number::New(env, static_cast<double>(out->reused_tokens)));
        o.Set("encodedTokens", Napi::Number::New(env, static_cast<double>(out->encoded_tokens)));
        o.Set("cachedTokens", Napi::Number::New(env, static_cast<double>(out->cached_tokens)));
        o.Set("melMs", Napi::Number::New(env, out->mel_ms));
        o.Set("encoderMs", Napi::Number::New(env, out->encoder_ms));
        o.Set("prefillMs", Napi::Number::New(env, out->prefill_ms));
        return o;
      });
}

// step(token) -> Promise<{ id }>: greedy; the argmax is taken on the worker, no logits are copied out.
Napi::Value SessionWrap::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "token must be a number");
  const int64_t tok64 = info[0].As<Napi::Number>().Int64Value();
  if (tok64 < 0 || tok64 > INT32_MAX) throw make_error(env, "INVALID_ARGUMENT", "token id out of range");
  const int32_t token = static_cast<int32_t>(tok64);
  auto s = acquire(env);
  auto id = std::make_shared<int32_t>(0);
  auto busy = busy_;
  return queue(
      env,
      [s, token, id, busy] {
        Release r{busy};
        *id = s->step_greedy(token);
      },
      [id](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", Napi::Number::New(env, *id));
        return o;
      });
}

// cancel(): the call in flight (if any) stops at its next check and rejects with ABORTED, as does every later
// call. Never blocks.
Napi::Value SessionWrap::Cancel(const Napi::CallbackInfo& info) {
  if (session_) session_->cancel();
  return info.Env().Undefined();
}

// truncate(samples): cuts the segment's audio back (Session::truncate_audio). Cheap bookkeeping only (the next
// start() recomputes what it needs), so it runs on the JS thread; the session must be idle.
Napi::Value SessionWrap::Truncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "samples must be a number");
  const double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n != static_cast<double>(static_cast<int64_t>(n)))
    throw make_error(env, "INVALID_ARGUMENT", "samples must be a non-negative integer");
  auto s = acquire(env);
  Release r{busy_};
  try {
    s->truncate_audio(static_cast<int64_t>(n));
  } catch (const Error& e) {
    throw make_error(env, rustasr::error_code_name(e.code()), e.what());
  }
  return env.Undefined();
}

Napi::Value SessionWrap::Dispose(const Napi::CallbackInfo& info) {
  session_.reset();
  return info.Env().Undefined();
}

// ------------------------------------------------------------------------------------------------ Model

// A forced aligner's state (rustasr::Aligner): align(samples, textIds) -> Promise<slot classes>; with RUSTASR_DEV
// also classify(ids, audioEmbeds) for the golden stage checks. Like a session, one call at a time; dispose()
// frees the state once a call in flight is done.
class AlignerWrap : public Napi::ObjectWrap<AlignerWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeAligner",
                       {InstanceMethod("align", &AlignerWrap::Align), InstanceMethod("dispose", &AlignerWrap::Dispose),
#ifdef RUSTASR_DEV
                        InstanceMethod("classify", &AlignerWrap::Classify),
#endif
                       });
  }

  explicit AlignerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AlignerWrap>(info) {}

  void attach(std::shared_ptr<const rustasr::Model> model) {
    auto* raw = new rustasr::Aligner(std::move(model));
    ++g_live_aligners;
    aligner_ = std::shared_ptr<rustasr::Aligner>(raw, [](rustasr::Aligner* a) {
      delete a;
      --g_live_aligners;
    });
  }

 private:
  std::shared_ptr<rustasr::Aligner> acquire(Napi::Env env) {
    if (!aligner_) throw make_error(env, "INVALID_ARGUMENT", "the aligner has been disposed");
    if (busy_->exchange(true)) throw make_error(env, "INVALID_ARGUMENT", "the aligner is busy with another call");
    return aligner_;
  }

  static Napi::Value result(Napi::Env env, const rustasr::AlignerOutput& r) {
    Napi::Object o = Napi::Object::New(env);
    Napi::Int32Array classes = Napi::Int32Array::New(env, r.classes.size());
    if (!r.classes.empty()) std::memcpy(classes.Data(), r.classes.data(), r.classes.size() * sizeof(int32_t));
    Napi::Int32Array positions = Napi::Int32Array::New(env, r.positions.size());
    for (size_t i = 0; i < r.positions.size(); ++i) positions[i] = static_cast<int32_t>(r.positions[i]);
    o.Set("classes", classes);
    o.Set("positions", positions);
    o.Set("nAudioTokens", Napi::Number::New(env, r.n_audio_tokens));
    if (!r.logits.empty()) o.Set("logits", to_f32(env, r.logits));
    if (!r.hidden.empty()) o.Set("hidden", to_f32(env, r.hidden));
    return o;
  }

  // align(samples: Float32Array, textIds: Int32Array, wantLogits = false) -> { classes, positions, nAudioTokens, logits? }
  Napi::Value Align(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto samples = std::make_shared<std::vector<float>>(from_f32(info[0], "samples"));
    auto text = std::make_shared<std::vector<int32_t>>(from_i32(info[1], "textIds"));
    const bool want_logits = info.Length() > 2 && info[2].ToBoolean().Value();
    auto a = acquire(env);
    auto out = std::make_shared<rustasr::AlignerOutput>();
    auto busy = busy_;
    return queue(
        env, [a, samples, text, want_logits, out, busy] {
          SessionWrap::Release r{busy};
          *out = a->align(samples->data(), samples->size(), text->data(), static_cast<int64_t>(text->size()), want_logits);
        },
        [out](Napi::Env env) -> Napi::Value { return result(env, *out); });
  }

#ifdef RUSTASR_DEV
  // Dev surface. classify(ids: Int32Array, audioEmbeds: Float32Array) -> { classes, positions, nAudioTokens,
  // logits, hidden }: a whole input given, for the golden stage checks.
  Napi::Value Classify(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto ids = std::make_shared<std::vector<int32_t>>(from_i32(info[0], "ids"));
    auto embeds = std::make_shared<std::vector<float>>(from_f32(info[1], "audioEmbeds"));
    auto a = acquire(env);
    const size_t hidden = static_cast<size_t>(rustasr::model_info(a->model()).hidden_size);
    if (embeds->size() % hidden != 0) {
      *busy_ = false;
      throw make_error(env, "INVALID_ARGUMENT", "audioEmbeds must hold a whole number of hidden_size rows");
    }
    auto out = std::make_shared<rustasr::AlignerOutput>();
    auto busy = busy_;
    return queue(
        env, [a, ids, embeds, hidden, out, busy] {
          SessionWrap::Release r{busy};
          *out = a->classify(ids->data(), static_cast<int64_t>(ids->size()), embeds->data(),
                             static_cast<int64_t>(embeds->size() / hidden), true, true);
        },
        [out](Napi::Env env) -> Napi::Value { return result(env, *out); });
  }
#endif

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    aligner_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<rustasr::Aligner> aligner_;
  std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("info", &ModelWrap::Info), InstanceMethod("createSession", &ModelWrap::CreateSession),
                        InstanceMethod("createAligner", &ModelWrap::CreateAligner),
                        InstanceMethod("batchStats", &ModelWrap::BatchStatsOf),
                        InstanceMethod("dispose", &ModelWrap::Dispose)});
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}
  void attach(std::shared_ptr<const rustasr::Model> m) { model_ = std::move(m); }

 private:
  const rustasr::Model& model(Napi::Env env) {
    if (!model_) throw make_error(env, "INVALID_ARGUMENT", "the model has been disposed");
    return *model_;
  }

  // batchStats() -> { batches, rows }: decode steps run together (rows / batches sessions per weight pass).
  Napi::Value BatchStatsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const rustasr::BatchStats b = rustasr::batch_stats(model(env));
    Napi::Object o = Napi::Object::New(env);
    o.Set("batches", static_cast<double>(b.batches));
    o.Set("rows", static_cast<double>(b.rows));
    return o;
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
    o.Set("minSamples", static_cast<double>(mi.min_samples));
    o.Set("windowSamples", static_cast<double>(mi.window_samples));
    Napi::Array langs = Napi::Array::New(env, mi.support_languages.size());
    for (size_t i = 0; i < mi.support_languages.size(); ++i) langs.Set(static_cast<uint32_t>(i), mi.support_languages[i]);
    o.Set("supportLanguages", langs);
    o.Set("kernel", mi.kernel);
    o.Set("threads", mi.threads);
    o.Set("quant", mi.quant);
    o.Set("precision", mi.precision);
    o.Set("int8Cache", rustasr::int8_cache_state(model(env)));
    o.Set("largePages", mi.large_pages);
    o.Set("device", mi.device);
    o.Set("deviceName", mi.device_name);
    o.Set("deviceFallback", mi.device_fallback);
    o.Set("kind", mi.kind);
    o.Set("classifyNum", mi.classify_num);
    o.Set("timestampTokenId", mi.timestamp_token_id);
    o.Set("timestampSegmentTime", mi.timestamp_segment_time);
    return o;
  }

  // A forced aligner's state (INVALID_ARGUMENT for an ASR model).
  Napi::Value CreateAligner(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    model(env);
    Napi::Object obj = env.GetInstanceData<AddonData>()->aligner_ctor.New({});
    try {
      AlignerWrap::Unwrap(obj)->attach(model_);
    } catch (const rustasr::Error& e) {
      throw make_error(env, rustasr::error_code_name(e.code()), e.what());
    }
    return obj;
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

namespace {

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
    if (o.Has("precision") && !o.Get("precision").IsUndefined()) {
      Napi::Value q = o.Get("precision");
      if (!q.IsString()) throw make_error(env, "INVALID_ARGUMENT", "precision must be a string");
      params.precision = q.As<Napi::String>().Utf8Value();
    }
    params.low_memory = bool_option(o, "lowMemory", params.low_memory);
    params.large_pages = bool_option(o, "largePages", params.large_pages);
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

// liveObjects() -> { models, sessions, aligners }: engine objects alive in this process (all threads): loaded
// models whose weights are still held, sessions and aligners whose state is not yet freed (the server's
// /metrics, leak checks).
Napi::Value LiveObjects(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("models", Napi::Number::New(info.Env(), static_cast<double>(g_live_models.load())));
  o.Set("sessions", Napi::Number::New(info.Env(), static_cast<double>(g_live_sessions.load())));
  o.Set("aligners", Napi::Number::New(info.Env(), static_cast<double>(g_live_aligners.load())));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->session_ctor = Napi::Persistent(SessionWrap::Init(env));
  data->model_ctor = Napi::Persistent(ModelWrap::Init(env));
  data->aligner_ctor = Napi::Persistent(AlignerWrap::Init(env));
  env.SetInstanceData<AddonData>(data);  // deleted by N-API when the environment ends
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("devices", Napi::Function::New(env, Devices));
  exports.Set("liveObjects", Napi::Function::New(env, LiveObjects));
#ifdef RUSTASR_DEV
  register_dev(env, exports);
#endif
  return exports;
}

}  // namespace

}  // namespace rustasr_addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return rustasr_addon::Init(env, exports); }
NODE_API_MODULE(rustasr, InitModule)
