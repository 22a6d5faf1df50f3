#include "json.h"

#include <cerrno>
#include <charconv>
#include <clocale>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_map>

namespace rustasr {

const char* json_type_name(JsonType t) {
  switch (t) {
    case JsonType::kNull: return "null";
    case JsonType::kBool: return "boolean";
    case JsonType::kNumber: return "number";
    case JsonType::kString: return "string";
    case JsonType::kArray: return "array";
    case JsonType::kObject: return "object";
  }
  return "?";
}

JsonParseError::JsonParseError(size_t offset, const std::string& what)
    : Error(ErrorCode::kInvalidConfig, "JSON error at byte offset " + std::to_string(offset) + ": " + what),
      offset_(offset),
      reason_(what) {}

struct JsonValue::Payload {
  std::string str;
  std::vector<JsonValue> arr;
  std::vector<Member> obj;
  std::unordered_map<std::string, size_t> index;  // key -> position in obj
};

namespace {
const std::string kEmptyString;
const std::vector<JsonValue> kEmptyArray;
const std::vector<JsonValue::Member> kEmptyObject;
}  // namespace

// ---- accessors --------------------------------------------------------------------------------------

static void require_type(const JsonValue& v, JsonType t) {
  if (v.type() != t) {
    throw JsonTypeError(std::string("JSON value is ") + json_type_name(v.type()) + ", expected " +
                        json_type_name(t));
  }
}

bool JsonValue::as_bool() const {
  require_type(*this, JsonType::kBool);
  return bool_;
}

double JsonValue::as_number() const {
  require_type(*this, JsonType::kNumber);
  return num_;
}

int64_t JsonValue::as_int64() const {
  require_type(*this, JsonType::kNumber);
  if (!is_int_) throw JsonTypeError("JSON number is not an integer literal in int64 range");
  return int_;
}

const std::string& JsonValue::as_string() const {
  require_type(*this, JsonType::kString);
  return p_ ? p_->str : kEmptyString;
}

size_t JsonValue::size() const {
  if (!p_) return 0;
  if (type_ == JsonType::kArray) return p_->arr.size();
  if (type_ == JsonType::kObject) return p_->obj.size();
  return 0;
}

const JsonValue& JsonValue::at(size_t i) const {
  require_type(*this, JsonType::kArray);
  if (i >= size()) {
    throw JsonTypeError("JSON array index " + std::to_string(i) + " out of range (size " +
                        std::to_string(size()) + ")");
  }
  return p_->arr[i];
}

const std::vector<JsonValue>& JsonValue::elements() const {
  require_type(*this, JsonType::kArray);
  return p_ ? p_->arr : kEmptyArray;
}

const JsonValue* JsonValue::get(const std::string& key) const {
  if (type_ != JsonType::kObject || !p_) return nullptr;
  auto it = p_->index.find(key);
  return it == p_->index.end() ? nullptr : &p_->obj[it->second].second;
}

const std::vector<JsonValue::Member>& JsonValue::members() const {
  require_type(*this, JsonType::kObject);
  return p_ ? p_->obj : kEmptyObject;
}

// ---- parser -------------------------------------------------------------------------------------------

// Recursive descent over [p_, end_). Every read goes through peek()/at_end() checks, so no access past
// end_ is possible; recursion is bounded by kJsonMaxDepth.
class JsonParser {
 public:
  JsonParser(const char* data, size_t size)
      : begin_(reinterpret_cast<const unsigned char*>(data)), p_(begin_), end_(begin_ + size) {}

  JsonValue parse_document() {
    // Optional UTF-8 BOM.
    if (end_ - p_ >= 3 && p_[0] == 0xEF && p_[1] == 0xBB && p_[2] == 0xBF) p_ += 3;
    skip_ws();
    JsonValue v;
    parse_value(v, 0);
    skip_ws();
    if (p_ != end_) fail("unexpected data after the JSON value");
    return v;
  }

 private:
  const unsigned char* begin_;
  const unsigned char* p_;
  const unsigned char* end_;

  [[noreturn]] void fail(const std::string& msg) const { fail_at(p_, msg); }
  [[noreturn]] void fail_at(const unsigned char* at, const std::string& msg) const {
    throw JsonParseError(static_cast<size_t>(at - begin_), msg);
  }

  bool at_end() const { return p_ >= end_; }
  int peek() const { return at_end() ? -1 : *p_; }

  void skip_ws() {
    while (!at_end() && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  void expect_literal(const char* lit) {
    const unsigned char* start = p_;
    for (const char* c = lit; *c; ++c) {
      if (at_end() || *p_ != static_cast<unsigned char>(*c)) fail_at(start, "invalid literal");
      ++p_;
    }
  }

  void parse_value(JsonValue& out, int depth) {
    if (depth >= kJsonMaxDepth) fail("nesting deeper than " + std::to_string(kJsonMaxDepth));
    switch (peek()) {
      case -1: fail("unexpected end of input, expected a value");
      case '{': parse_object(out, depth); return;
      case '[': parse_array(out, depth); return;
      case '"':
        out.type_ = JsonType::kString;
        out.p_ = std::make_shared<JsonValue::Payload>();
        parse_string(out.p_->str);
        return;
      case 't':
        expect_literal("true");
        out.type_ = JsonType::kBool;
        out.bool_ = true;
        return;
      case 'f':
        expect_literal("false");
        out.type_ = JsonType::kBool;
        out.bool_ = false;
        return;
      case 'n':
        expect_literal("null");
        out.type_ = JsonType::kNull;
        return;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) {
          parse_number(out);
          return;
        }
        fail("unexpected character, expected a value");
    }
  }

  void parse_object(JsonValue& out, int depth) {
    out.type_ = JsonType::kObject;
    out.p_ = std::make_shared<JsonValue::Payload>();
    JsonValue::Payload& pl = *out.p_;
    ++p_;  // '{'
    skip_ws();
    if (peek() == '}') {
      ++p_;
      return;
    }
    for (;;) {
      skip_ws();
      if (peek() != '"') fail("expected a string key");
      const unsigned char* key_at = p_;
      std::string key;
      parse_string(key);
      skip_ws();
      if (peek() != ':') fail("expected ':'");
      ++p_;
      skip_ws();
      if (pl.index.count(key)) fail_at(key_at, "duplicate key \"" + key + "\"");
      pl.obj.emplace_back(std::move(key), JsonValue());
      parse_value(pl.obj.back().second, depth + 1);
      pl.index.emplace(pl.obj.back().first, pl.obj.size() - 1);
      skip_ws();
      int c = peek();
      if (c == ',') {
        ++p_;
        continue;
      }
      if (c == '}') {
        ++p_;
        return;
      }
      fail("expected ',' or '}'");
    }
  }

  void parse_array(JsonValue& out, int depth) {
    out.type_ = JsonType::kArray;
    out.p_ = std::make_shared<JsonValue::Payload>();
    JsonValue::Payload& pl = *out.p_;
    ++p_;  // '['
    skip_ws();
    if (peek() == ']') {
      ++p_;
      return;
    }
    for (;;) {
      skip_ws();
      pl.arr.emplace_back();
      parse_value(pl.arr.back(), depth + 1);
      skip_ws();
      int c = peek();
      if (c == ',') {
        ++p_;
        continue;
      }
      if (c == ']') {
        ++p_;
        return;
      }
      fail("expected ',' or ']'");
    }
  }

  static void append_utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // Reads the 4 hex digits after "\u" (p_ points at the first digit).
  uint32_t read_hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      int c = p_[i];
      uint32_t d;
      if (c >= '0' && c <= '9') d = static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<uint32_t>(c - 'A' + 10);
      else fail_at(p_ + i, "invalid hex digit in \\u escape");
      v = (v << 4) | d;
    }
    p_ += 4;
    return v;
  }

  // Validates one UTF-8 sequence starting at p_ (a byte >= 0x80), appends it and advances. Rejects
  // overlong forms, surrogates (U+D800..DFFF) and code points above U+10FFFF.
  void copy_utf8_sequence(std::string& s) {
    const unsigned char* start = p_;
    unsigned char b0 = *p_;
    int len;
    uint32_t cp;
    uint32_t min_cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      cp = b0 & 0x1F;
      min_cp = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      cp = b0 & 0x0F;
      min_cp = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      cp = b0 & 0x07;
      min_cp = 0x10000;
    } else {
      fail("invalid UTF-8 byte in string");
    }
    if (end_ - p_ < len) fail("truncated UTF-8 sequence in string");
    for (int i = 1; i < len; ++i) {
      unsigned char b = p_[i];
      if ((b & 0xC0) != 0x80) fail_at(p_ + i, "invalid UTF-8 continuation byte in string");
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      fail_at(start, "invalid UTF-8 sequence in string");
    }
    s.append(reinterpret_cast<const char*>(p_), static_cast<size_t>(len));
    p_ += len;
  }

  void parse_string(std::string& out) {
    const unsigned char* open = p_;
    ++p_;  // opening quote
    for (;;) {
      if (at_end()) fail_at(open, "unterminated string");
      unsigned char c = *p_;
      if (c == '"') {
        ++p_;
        return;
      }
      if (c < 0x20) fail("raw control character in string");
      if (c >= 0x80) {
        copy_utf8_sequence(out);
        continue;
      }
      if (c != '\\') {
        // Copy a run of plain ASCII at once.
        const unsigned char* run = p_;
        while (!at_end() && *p_ >= 0x20 && *p_ < 0x80 && *p_ != '"' && *p_ != '\\') ++p_;
        out.append(reinterpret_cast<const char*>(run), static_cast<size_t>(p_ - run));
        continue;
      }
      const unsigned char* esc = p_;
      ++p_;  // backslash
      if (at_end()) fail_at(open, "unterminated string");
      unsigned char e = *p_++;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = read_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(esc, "lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // Must be followed by \uDC00..\uDFFF.
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail_at(esc, "lone high surrogate in \\u escape");
            p_ += 2;
            uint32_t lo = read_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail_at(esc, "invalid surrogate pair in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail_at(esc, "invalid escape sequence");
      }
    }
  }

  static bool is_digit(int c) { return c >= '0' && c <= '9'; }

  void parse_number(JsonValue& out) {
    const unsigned char* start = p_;
    bool negative = false;
    if (peek() == '-') {
      negative = true;
      ++p_;
    }
    if (!is_digit(peek())) fail("expected a digit");
    if (peek() == '0') {
      ++p_;
      if (is_digit(peek())) fail("leading zeros are not allowed");
    } else {
      while (is_digit(peek())) ++p_;
    }
    bool integer_literal = true;
    if (peek() == '.') {
      integer_literal = false;
      ++p_;
      if (!is_digit(peek())) fail("expected a digit after '.'");
      while (is_digit(peek())) ++p_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integer_literal = false;
      ++p_;
      if (peek() == '+' || peek() == '-') ++p_;
      if (!is_digit(peek())) fail("expected a digit in the exponent");
      while (is_digit(peek())) ++p_;
    }
    out.type_ = JsonType::kNumber;
    const char* s = reinterpret_cast<const char*>(start);
    const char* e = reinterpret_cast<const char*>(p_);

    if (integer_literal) {
      // Exact int64 accumulation with overflow detection (accumulate negatively to reach INT64_MIN).
      const char* d = s + (negative ? 1 : 0);
      int64_t v = 0;
      bool overflow = false;
      for (; d < e; ++d) {
        int digit = *d - '0';
        if (v < (std::numeric_limits<int64_t>::min() + digit) / 10) {
          overflow = true;
          break;
        }
        v = v * 10 - digit;
      }
      if (!overflow && !negative && v == std::numeric_limits<int64_t>::min()) overflow = true;
      if (!overflow) {
        out.is_int_ = true;
        out.int_ = negative ? v : -v;
        out.num_ = static_cast<double>(out.int_);
        return;
      }
    }
    out.num_ = to_double(s, e, start);
  }

  // Converts an already-validated JSON number literal to double (overflow gives +-inf: a JSON number is
  // finite text, and callers validate ranges anyway).
  double to_double(const char* s, const char* e, const unsigned char* at) const {
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
    double v = 0;
    auto r = std::from_chars(s, e, v);
    if (r.ec == std::errc::result_out_of_range) {
      // from_chars leaves v unchanged on range errors; fall back to strtod semantics below.
    } else if (r.ec != std::errc() || r.ptr != e) {
      fail_at(at, "invalid number");
    } else {
      return v;
    }
#endif
    // strtod is locale-dependent: substitute the locale's decimal point for '.'.
    std::string tmp(s, e);
    const char* dp = std::localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && dp[1] == '\0') {
      for (char& ch : tmp)
        if (ch == '.') ch = dp[0];
    }
    char* endp = nullptr;
    errno = 0;
    double v2 = std::strtod(tmp.c_str(), &endp);
    if (endp != tmp.c_str() + tmp.size()) fail_at(at, "invalid number");
    return v2;  // ERANGE: +-HUGE_VAL or 0 / denormal, acceptable
  }
};

JsonValue JsonValue::parse(const char* data, size_t size) { return parse_json(data, size); }

JsonValue parse_json(const char* data, size_t size) {
  if (data == nullptr && size != 0) throw JsonParseError(0, "null input");
  JsonParser parser(data == nullptr ? "" : data, size);
  return parser.parse_document();
}

}  // namespace rustasr
