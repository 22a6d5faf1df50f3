// A small, strict JSON parser (RFC 8259) for config.json, safetensors headers and index files.
//
// Strictness: exactly one JSON value surrounded by optional whitespace (space, \t, \n, \r); an optional
// leading UTF-8 byte-order mark is skipped. No comments, no trailing commas, no NaN/Infinity, no leading
// zeros or '+'. Strings must be valid UTF-8, must not contain raw control characters (< 0x20), and every
// escape (\" \\ \/ \b \f \n \r \t \uXXXX) is decoded to UTF-8; \u surrogate pairs are combined and a lone
// surrogate is an error. Duplicate keys in one object are an error (a header that names a tensor twice is
// ambiguous). Nesting deeper than kJsonMaxDepth is an error.
//
// Safety: the parser never reads outside [data, data + size) and never recurses deeper than kJsonMaxDepth,
// so it can be fed hostile input. Errors are thrown as JsonParseError carrying the byte offset; it is an
// rustasr::Error with code kInvalidConfig, so callers that only catch Error see it (callers parsing
// checkpoint files catch JsonParseError and rethrow as kCorruptWeights).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <memory>
#include <utility>
#include <vector>

#include "rustasr/engine.h"

namespace rustasr {

constexpr int kJsonMaxDepth = 256;

enum class JsonType { kNull, kBool, kNumber, kString, kArray, kObject };

// "null", "boolean", "number", "string", "array", "object".
const char* json_type_name(JsonType t);

class JsonParseError : public Error {
 public:
  JsonParseError(size_t offset, const std::string& what);
  size_t offset() const { return offset_; }  // byte offset of the problem in the input
  const std::string& reason() const { return reason_; }  // the message without the offset prefix

 private:
  size_t offset_;
  std::string reason_;
};

// Thrown by the as_* accessors when a value has another type (a caller bug or a schema mismatch; callers
// that validate schemas should check type() first and produce their own message). Code kInvalidConfig.
class JsonTypeError : public Error {
 public:
  explicit JsonTypeError(const std::string& what) : Error(ErrorCode::kInvalidConfig, what) {}
};

class JsonValue {
 public:
  using Member = std::pair<std::string, JsonValue>;

  JsonValue() = default;  // null

  // Same as parse_json() below.
  static JsonValue parse(const char* data, size_t size);
  static JsonValue parse(const std::string& text) { return parse(text.data(), text.size()); }

  JsonType type() const { return type_; }
  bool is_null() const { return type_ == JsonType::kNull; }
  bool is_bool() const { return type_ == JsonType::kBool; }
  bool is_number() const { return type_ == JsonType::kNumber; }
  bool is_string() const { return type_ == JsonType::kString; }
  bool is_array() const { return type_ == JsonType::kArray; }
  bool is_object() const { return type_ == JsonType::kObject; }

  // True when the number was written as an integer literal (no fraction, no exponent) whose value fits in
  // int64_t; then as_int64() is exact. "64.0", "1e3" and integers beyond int64 range are not integers.
  bool is_integer() const { return type_ == JsonType::kNumber && is_int_; }

  bool as_bool() const;
  double as_number() const;   // any number (integers converted to double)
  int64_t as_int64() const;   // requires is_integer()
  const std::string& as_string() const;

  // Arrays: element count; objects: member count; otherwise 0.
  size_t size() const;
  // Array element i; throws JsonTypeError if not an array or if i >= size().
  const JsonValue& at(size_t i) const;
  const std::vector<JsonValue>& elements() const;  // requires an array

  // Object member by key; nullptr if absent or if this is not an object.
  const JsonValue* get(const std::string& key) const;
  // Object members in the order they appear in the input; requires an object.
  const std::vector<Member>& members() const;

 private:
  friend class JsonParser;

  JsonType type_ = JsonType::kNull;
  bool bool_ = false;
  bool is_int_ = false;
  double num_ = 0.0;
  int64_t int_ = 0;
  // String / array / object contents live behind a pointer so that a scalar JsonValue stays small (~40
  // bytes): memory stays proportional to the input even for hostile inputs like "[0,0,0,...]". Contents
  // are immutable once parsed, so copies share them.
  struct Payload;
  std::shared_ptr<Payload> p_;
};

// Parses one JSON document. Throws JsonParseError.
JsonValue parse_json(const char* data, size_t size);
inline JsonValue parse_json(const std::string& text) { return parse_json(text.data(), text.size()); }

}  // namespace rustasr
