// The test/dev surface of the binding (built with RUSTASR_DEV; prebuilt binaries leave it out): the engine's
// stage-by-stage calls with their intermediate results (mel, encode, prefill logits, step logits), and
// exports.dev = { argmax, cpuKernels, probe } for tests and the benchmark.
#include "common.h"

#include <utility>

#include "backend/cpu/probe.h"

namespace rustasr_addon {

Napi::Value SessionWrap::Mel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto samples = std::make_shared<std::vector<float>>(from_f32(info[0], "samples"));
  auto s = acquire(env);
  auto out = std::make_shared<std::vector<float>>();
  auto busy = busy_;
  return queue(
      env,
      [s, samples, out, busy] {
        Release r{busy};
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

Napi::Value SessionWrap::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto mel = std::make_shared<std::vector<float>>(from_f32(info[0], "mel"));
  if (!info[1].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "frames must be a number");
  const int64_t frames = info[1].As<Napi::Number>().Int64Value();
  const bool keep = info.Length() > 2 && info[2].ToBoolean().Value();
  auto s = acquire(env);
  const size_t bins = static_cast<size_t>(rustasr::model_info(s->model()).num_mel_bins);
  if (frames <= 0 || mel->size() != bins * static_cast<size_t>(frames)) {
    release_now();
    throw make_error(env, "INVALID_ARGUMENT", "mel must hold num_mel_bins * frames values");
  }
  auto out = std::make_shared<rustasr::EncoderOutputs>();
  auto busy = busy_;
  return queue(
      env,
      [s, mel, frames, keep, out, busy] {
        Release r{busy};
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

Napi::Value SessionWrap::Prefill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw make_error(env, "INVALID_ARGUMENT", "ids must be an Int32Array");
  Napi::Int32Array ids_a = info[0].As<Napi::Int32Array>();
  auto ids = std::make_shared<std::vector<int32_t>>(ids_a.Data(), ids_a.Data() + ids_a.ElementLength());
  auto embeds = std::make_shared<std::vector<float>>(from_f32(info[1], "audioEmbeds"));
  auto s = acquire(env);
  const size_t hidden = static_cast<size_t>(rustasr::model_info(s->model()).hidden_size);
  if (embeds->size() % hidden != 0) {
    release_now();
    throw make_error(env, "INVALID_ARGUMENT", "audioEmbeds must hold a whole number of hidden_size rows");
  }
  auto logits = std::make_shared<std::vector<float>>();
  auto hidden_last = std::make_shared<std::vector<float>>();
  auto busy = busy_;
  return queue(
      env,
      [s, ids, embeds, hidden, logits, hidden_last, busy] {
        Release r{busy};
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

// stepLogits(token) -> Promise<{ id, logits }>
Napi::Value SessionWrap::StepLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "token must be a number");
  const int64_t tok64 = info[0].As<Napi::Number>().Int64Value();
  if (tok64 < 0 || tok64 > INT32_MAX) throw make_error(env, "INVALID_ARGUMENT", "token id out of range");
  const int32_t token = static_cast<int32_t>(tok64);
  auto s = acquire(env);
  auto logits = std::make_shared<std::vector<float>>();
  auto busy = busy_;
  return queue(
      env,
      [s, token, logits, busy] {
        Release r{busy};
        *logits = s->step(token);
      },
      [logits](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", Napi::Number::New(env, rustasr::argmax(logits->data(), static_cast<int64_t>(logits->size()))));
        o.Set("logits", to_f32(env, *logits));
        return o;
      });
}

namespace {

Napi::Value Argmax(const Napi::CallbackInfo& info) {
  std::vector<float> v = from_f32(info[0], "values");
  if (v.empty()) throw make_error(info.Env(), "INVALID_ARGUMENT", "argmax of an empty array");
  return Napi::Number::New(info.Env(), rustasr::argmax(v.data(), static_cast<int64_t>(v.size())));
}

Napi::Value CpuKernels(const Napi::CallbackInfo& info) {
  std::vector<std::string> f = rustasr::cpu_kernels();
  Napi::Array a = Napi::Array::New(info.Env(), f.size());
  for (size_t i = 0; i < f.size(); ++i) a.Set(static_cast<uint32_t>(i), f[i]);
  return a;
}


// probe({ threads?, kernel?, bandwidthBytes?, bandwidthReps?, peakSeconds?, peakReps?, gemm?: [{ impl, n, rows,
// cols }], gemmReps? }) -> Promise<{ blas, bandwidth?: { threads, bytes, isa, seconds[] }, peak: [{ kind, isa,
// threads, flops, seconds[] }], gemm: [{ impl, isa, threads, n, rows, cols, flops, seconds[] }] }>: the machine
// floors for `npm run bench` (native/src/backend/cpu/probe.h). bandwidthBytes = 0 skips the bandwidth probe,
// peakReps = 0 (the default) the compute peak (every kind this CPU has: fp32-fma, bf16-dot).
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
    double peak_seconds = 0.2;
    int peak_reps = 0;
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
    args->peak_seconds = num(o, "peakSeconds", args->peak_seconds);
    args->peak_reps = static_cast<int>(num(o, "peakReps", args->peak_reps));
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
  auto peaks = std::make_shared<std::vector<rustasr::cpu::PeakProbe>>();
  return queue(
      env,
      [args, blas, bw, gemms, peaks] {
        *blas = rustasr::cpu::probe_blas_info();
        if (args->peak_reps > 0)
          for (const std::string& kind : rustasr::cpu::probe_peak_kinds())
            peaks->push_back(rustasr::cpu::probe_compute_peak(args->threads, kind, args->peak_seconds, args->peak_reps));
        if (args->bw_bytes > 0) *bw = rustasr::cpu::probe_read_bandwidth(args->threads, args->bw_bytes, args->bw_reps);
        for (const Shape& s : args->shapes)
          gemms->push_back(rustasr::cpu::probe_gemm(args->threads, args->kernel, s.impl, s.n, s.rows, s.cols, args->gemm_reps));
      },
      [blas, bw, gemms, peaks](Napi::Env env) -> Napi::Value {
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
        Napi::Array pa = Napi::Array::New(env, peaks->size());
        for (size_t i = 0; i < peaks->size(); ++i) {
          const rustasr::cpu::PeakProbe& p = (*peaks)[i];
          Napi::Object r = Napi::Object::New(env);
          r.Set("kind", p.kind);
          r.Set("isa", p.isa);
          r.Set("threads", p.threads);
          r.Set("flops", p.flops);
          r.Set("seconds", secs(p.seconds));
          pa.Set(static_cast<uint32_t>(i), r);
        }
        o.Set("peak", pa);
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

}  // namespace

void register_dev(Napi::Env env, Napi::Object exports) {
  Napi::Object dev = Napi::Object::New(env);
  dev.Set("argmax", Napi::Function::New(env, Argmax));
  dev.Set("cpuKernels", Napi::Function::New(env, CpuKernels));
  dev.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("dev", dev);
}

}  // namespace rustasr_addon
