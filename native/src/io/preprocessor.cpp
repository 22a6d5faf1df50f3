#include "preprocessor.h"

#include <cmath>
#include <cstdio>

#include "../util/json.h"
#include "file.h"
#include "rustasr/engine.h"

namespace rustasr {

namespace {

constexpr const char* kLabel = "preprocessor_config.json";

[[noreturn]] void invalid(const std::string& msg) {
  throw Error(ErrorCode::kInvalidConfig, std::string(kLabel) + ": " + msg);
}

std::string describe(const JsonValue& v) {
  if (v.is_integer()) return std::to_string(v.as_int64());
  if (v.is_number()) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v.as_number());
    return buf;
  }
  if (v.is_string()) {
    std::string s = v.as_string();
    if (s.size() > 40) s = s.substr(0, 40) + "...";
    return "\"" + s + "\"";
  }
  return json_type_name(v.type());
}

// The field's value when present (an integer, or an integral float), checked to be `supported`.
void expect_value(const JsonValue& root, const char* key, int supported, const std::string& what) {
  const JsonValue* v = root.get(key);
  if (!v || v->is_null()) return;
  const bool integral = v->is_integer() || (v->is_number() && std::isfinite(v->as_number()) &&
                                             v->as_number() == std::floor(v->as_number()));
  if (!integral) invalid(std::string(key) + ": expected an integer, got " + describe(*v));
  const double x = v->is_integer() ? static_cast<double>(v->as_int64()) : v->as_number();
  if (x != static_cast<double>(supported)) {
    invalid(std::string(key) + ": " + describe(*v) + " is not supported; the engine implements " + what +
            " (the official Qwen3-ASR processor)");
  }
}

}  // namespace

MelParams load_mel_params(const std::string& dir, int n_mels) {
  MelParams p;  // the official processor's values
  if (n_mels != p.n_mels) {
    throw Error(ErrorCode::kInvalidConfig, "config.json: num_mel_bins " + std::to_string(n_mels) +
                                               " is not supported; the engine implements " +
                                               std::to_string(p.n_mels) + " mel bins");
  }
  const std::string path = dir + "/" + kLabel;
  OpenOptions o;
  o.optional = true;
  bool found = false;
  const std::string text = read_small_file(path, kMaxConfigBytes, ErrorCode::kInvalidConfig, kLabel, o, &found);
  if (!found) return p;
  JsonValue root;
  try {
    root = parse_json(text);
  } catch (const JsonParseError& e) {
    invalid(e.what());
  }
  if (!root.is_object()) invalid(std::string("expected an object, got ") + json_type_name(root.type()));
  {
    // feature_size first: its mismatch with config.json is the likelier mistake.
    const JsonValue* v = root.get("feature_size");
    if (v && !v->is_null()) {
      const bool integral = v->is_integer() || (v->is_number() && std::isfinite(v->as_number()) &&
                                                 v->as_number() == std::floor(v->as_number()));
      if (!integral) invalid("feature_size: expected an integer, got " + describe(*v));
      const double x = v->is_integer() ? static_cast<double>(v->as_int64()) : v->as_number();
      if (x != static_cast<double>(n_mels)) {
        invalid("feature_size " + describe(*v) + " differs from audio_config.num_mel_bins " + std::to_string(n_mels));
      }
    }
  }
  expect_value(root, "n_fft", p.n_fft, "n_fft " + std::to_string(p.n_fft));
  expect_value(root, "hop_length", p.hop, "hop_length " + std::to_string(p.hop));
  expect_value(root, "sampling_rate", p.sample_rate, "sampling_rate " + std::to_string(p.sample_rate) + " Hz");
  return p;
}

}  // namespace rustasr
