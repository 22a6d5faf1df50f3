#include "config.h"

#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "../util/json.h"
#include "file.h"
#include "rustasr/engine.h"

namespace rustasr {

namespace {

// A float as JSON would write it, always with a '.' or an exponent: 64.0, 64.5, 1e+300.
std::string float_str(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  std::string s(buf);
  // Shortest form that reads back as the same double.
  for (int prec = 1; prec < 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (std::strtod(buf, nullptr) == x) {
      s = buf;
      break;
    }
  }
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

// Reads fields of one JSON object, producing "LABEL: a.b.field: problem" errors.
class FieldReader {
 public:
  FieldReader(const std::string& label, const JsonValue* obj, std::string path)
      : label_(label), obj_(obj), path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    throw Error(ErrorCode::kInvalidConfig, label_ + ": " + full(field) + ": " + msg);
  }
  std::string full(const std::string& field) const { return path_.empty() ? field : path_ + "." + field; }

  const JsonValue* get(const std::string& field) const { return obj_ ? obj_->get(field) : nullptr; }

  // A JSON integer in [min, max]. An integral float ("64.0", "1e3") counts as that integer; a fractional one
  // is refused as "got 64.5 (not an integer)".
  int integer(const std::string& field, int64_t min, const char* what, int64_t max = INT_MAX) const {
    const JsonValue* v = get(field);
    if (!v) fail(field, std::string("missing (expected ") + what + ")");
    int64_t n = 0;
    if (v->is_integer()) {
      n = v->as_int64();
    } else if (v->is_number() && std::isfinite(v->as_number()) && v->as_number() == std::floor(v->as_number()) &&
               std::fabs(v->as_number()) <= 9007199254740992.0) {
      n = static_cast<int64_t>(v->as_number());
    } else {
      fail(field, std::string("expected ") + what + ", got " + describe(*v) +
                      (v->is_number() && std::isfinite(v->as_number()) ? " (not an integer)" : ""));
    }
    if (n < min || n > max) {
      fail(field, std::string("expected ") + what + ", got " + describe(*v) +
                      (n > max && max < INT_MAX ? " (the limit is " + std::to_string(max) + ")" : ""));
    }
    return static_cast<int>(n);
  }
  int positive(const std::string& field, int64_t max = INT_MAX) const {
    return integer(field, 1, "a positive integer", max);
  }
  int non_negative(const std::string& field) const { return integer(field, 0, "a non-negative integer"); }

  // A finite number in (0, max].
  double positive_number(const std::string& field, double max) const {
    const JsonValue* v = get(field);
    if (!v) fail(field, "missing (expected a positive number)");
    if (!v->is_number() || !(v->as_number() > 0) || !std::isfinite(v->as_number())) {
      fail(field, "expected a positive number, got " + describe(*v));
    }
    if (v->as_number() > max) {
      std::ostringstream os;
      os << max;
      fail(field, "expected a positive number, got " + describe(*v) + " (the limit is " + os.str() + ")");
    }
    return v->as_number();
  }

  // A string; `def` when absent (nullptr: required).
  std::string string(const std::string& field, const char* def) const {
    const JsonValue* v = get(field);
    if (!v) {
      if (def) return def;
      fail(field, "missing (expected a string)");
    }
    if (!v->is_string()) fail(field, "expected a string, got " + describe(*v));
    return v->as_string();
  }

  // An object member (required).
  FieldReader object(const std::string& field) const {
    const JsonValue* v = get(field);
    if (!v) fail(field, "missing (expected an object)");
    if (!v->is_object()) fail(field, "expected an object, got " + describe(*v));
    return FieldReader(label_, v, full(field));
  }

  static std::string describe(const JsonValue& v) {
    switch (v.type()) {
      case JsonType::kNumber: {
        std::ostringstream os;
        if (v.is_integer()) os << v.as_int64();
        else os << float_str(v.as_number());
        return os.str();
      }
      case JsonType::kString: {
        std::string s = v.as_string();
        if (s.size() > 40) s = s.substr(0, 40) + "...";
        return "\"" + s + "\"";
      }
      case JsonType::kBool: return v.as_bool() ? "true" : "false";
      default: return json_type_name(v.type());
    }
  }

 private:
  const std::string& label_;
  const JsonValue* obj_;
  std::string path_;
};

ModelConfig parse_config(const std::string& text, const std::string& label) {
  static_assert(kMaxWidth <= INT_MAX && kMaxLayers <= INT_MAX && kMaxVocab <= INT_MAX && kMaxPositions <= INT_MAX,
                "bounds fit in int");
  JsonValue root;
  try {
    root = parse_json(text);
  } catch (const JsonParseError& e) {
    throw Error(ErrorCode::kInvalidConfig, label + ": malformed JSON at byte offset " + std::to_string(e.offset()) +
                                               ": " + e.reason());
  }
  if (!root.is_object()) {
    throw Error(ErrorCode::kInvalidConfig, label + ": top level is " + json_type_name(root.type()) +
                                               ", expected an object");
  }

  ModelConfig c;
  FieldReader top(label, &root, "");
  FieldReader thinker = top.object("thinker_config");
  FieldReader audio = thinker.object("audio_config");
  FieldReader text_cfg = thinker.object("text_config");

  // ---- audio encoder
  AudioConfig& a = c.audio;
  a.num_mel_bins = audio.positive("num_mel_bins", kMaxWidth);
  a.d_model = audio.positive("d_model", kMaxWidth);
  a.encoder_layers = audio.positive("encoder_layers", kMaxLayers);
  a.encoder_attention_heads = audio.positive("encoder_attention_heads", kMaxWidth);
  a.encoder_ffn_dim = audio.positive("encoder_ffn_dim", kMaxWidth);
  a.downsample_hidden_size = audio.positive("downsample_hidden_size", kMaxWidth);
  a.output_dim = audio.positive("output_dim", kMaxWidth);
  a.n_window = audio.positive("n_window");
  a.n_window_infer = audio.positive("n_window_infer", kMaxPositions);
  a.max_source_positions = audio.positive("max_source_positions", kMaxPositions);
  a.activation_function = audio.string("activation_function", "gelu");

  // ---- text decoder
  TextConfig& t = c.text;
  t.hidden_size = text_cfg.positive("hidden_size", kMaxWidth);
  t.num_hidden_layers = text_cfg.positive("num_hidden_layers", kMaxLayers);
  t.num_attention_heads = text_cfg.positive("num_attention_heads", kMaxWidth);
  t.num_key_value_heads = text_cfg.positive("num_key_value_heads", kMaxWidth);
  const bool explicit_head_dim = text_cfg.get("head_dim") != nullptr && !text_cfg.get("head_dim")->is_null();
  if (explicit_head_dim) {
    t.head_dim = text_cfg.positive("head_dim", kMaxWidth);
  } else {
    if (t.hidden_size % t.num_attention_heads != 0) {
      text_cfg.fail("head_dim", "absent and hidden_size (" + std::to_string(t.hidden_size) +
                                    ") is not divisible by num_attention_heads (" +
                                    std::to_string(t.num_attention_heads) + ")");
    }
    t.head_dim = t.hidden_size / t.num_attention_heads;
  }
  t.intermediate_size = text_cfg.positive("intermediate_size", kMaxWidth);
  t.vocab_size = text_cfg.positive("vocab_size", kMaxVocab);
  t.max_position_embeddings = text_cfg.positive("max_position_embeddings", kMaxPositions);
  t.rms_norm_eps = text_cfg.positive_number("rms_norm_eps", 1.0);
  // rope_theta: classic location, or the newer transformers "rope_parameters": {"rope_theta": ...}.
  if (!text_cfg.get("rope_theta") && text_cfg.get("rope_parameters") && text_cfg.get("rope_parameters")->is_object()) {
    t.rope_theta = text_cfg.object("rope_parameters").positive_number("rope_theta", kMaxRopeTheta);
  } else {
    t.rope_theta = text_cfg.positive_number("rope_theta", kMaxRopeTheta);
  }
  t.hidden_act = text_cfg.string("hidden_act", "silu");

  // tie_word_embeddings: text_config, then thinker_config, then top level; false if absent everywhere.
  {
    const FieldReader* scopes[] = {&text_cfg, &thinker, &top};
    t.tie_word_embeddings = false;
    for (const FieldReader* s : scopes) {
      const JsonValue* v = s->get("tie_word_embeddings");
      if (!v || v->is_null()) continue;
      if (!v->is_bool()) s->fail("tie_word_embeddings", "expected true or false, got " + FieldReader::describe(*v));
      t.tie_word_embeddings = v->as_bool();
      break;
    }
  }

  // ---- special tokens
  c.audio_token_id = thinker.non_negative("audio_token_id");
  c.audio_start_token_id = thinker.non_negative("audio_start_token_id");
  c.audio_end_token_id = thinker.non_negative("audio_end_token_id");

  // ---- languages (optional)
  if (const JsonValue* langs = top.get("support_languages")) {
    if (!langs->is_array()) top.fail("support_languages", "expected an array of strings");
    for (size_t i = 0; i < langs->size(); ++i) {
      if (!langs->at(i).is_string()) {
        top.fail("support_languages[" + std::to_string(i) + "]",
                 "expected a string, got " + FieldReader::describe(langs->at(i)));
      }
      c.support_languages.push_back(langs->at(i).as_string());
    }
  }

  // ---- forced aligner (the official modeling code: `"forced_aligner" in thinker_config.model_type`)
  if (thinker.string("model_type", "").find("forced_aligner") != std::string::npos) {
    c.kind = ModelKind::kForcedAligner;
    c.aligner.classify_num = thinker.positive("classify_num", 1 << 20);
    c.aligner.timestamp_token_id = top.non_negative("timestamp_token_id");
    c.aligner.timestamp_segment_time = top.positive_number("timestamp_segment_time", 60000.0);
    if (c.aligner.timestamp_token_id >= t.vocab_size) {
      top.fail("timestamp_token_id", std::to_string(c.aligner.timestamp_token_id) +
                                         " is outside the vocabulary (vocab_size " + std::to_string(t.vocab_size) + ")");
    }
  }

  // ---- consistency
  auto s = [](int64_t v) { return std::to_string(v); };
  if (a.activation_function != "gelu") {
    audio.fail("activation_function", "unsupported \"" + a.activation_function + "\" (only \"gelu\")");
  }
  if (t.hidden_act != "silu" && t.hidden_act != "swish") {
    text_cfg.fail("hidden_act", "unsupported \"" + t.hidden_act + "\" (only \"silu\")");
  }
  if (a.num_mel_bins % 8 != 0) audio.fail("num_mel_bins", s(a.num_mel_bins) + " is not divisible by 8");
  if (a.num_mel_bins != kMelBins) {
    audio.fail("num_mel_bins", "the engine supports " + s(kMelBins) + " mel bins (the official processor's), got " +
                                   s(a.num_mel_bins));
  }
  if (a.d_model % a.encoder_attention_heads != 0) {
    audio.fail("encoder_attention_heads",
               s(a.encoder_attention_heads) + " does not divide d_model (" + s(a.d_model) + ")");
  }
  if (a.n_window != 50) {
    audio.fail("n_window", "must be 50 (the official code hard-codes 100-frame chunks), got " + s(a.n_window));
  }
  if (a.n_window_infer % 100 != 0) {
    audio.fail("n_window_infer", "must be a positive multiple of 100, got " + s(a.n_window_infer));
  }
  if (a.output_dim != t.hidden_size) {
    audio.fail("output_dim", s(a.output_dim) + " differs from " + text_cfg.full("hidden_size") + " (" +
                                 s(t.hidden_size) + ")");
  }
  if (t.num_attention_heads % t.num_key_value_heads != 0) {
    text_cfg.fail("num_key_value_heads", s(t.num_key_value_heads) + " does not divide num_attention_heads (" +
                                             s(t.num_attention_heads) + ")");
  }
  if (t.head_dim % 2 != 0) text_cfg.fail("head_dim", "must be even for rotary embeddings, got " + s(t.head_dim));
  const std::pair<const char*, int> ids[] = {{"audio_token_id", c.audio_token_id},
                                             {"audio_start_token_id", c.audio_start_token_id},
                                             {"audio_end_token_id", c.audio_end_token_id}};
  for (const auto& id : ids) {
    if (id.second >= t.vocab_size) {
      thinker.fail(id.first, s(id.second) + " is outside the vocabulary (vocab_size " + s(t.vocab_size) + ")");
    }
  }
  return c;
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text) { return parse_config(json_text, "config.json"); }

ModelConfig load_model_config(const std::string& path) {
  OpenOptions o;
  o.missing_message = "config file not found: " + path;
  return parse_config(read_small_file(path, kMaxConfigBytes, ErrorCode::kInvalidConfig, "config.json", o), path);
}

}  // namespace rustasr
