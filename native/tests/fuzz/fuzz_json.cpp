// libFuzzer target: the strict JSON parser (util/json.cpp).
//
// Any input must either parse or throw JsonParseError with an offset inside the input; nothing else may
// escape, and ASan/UBSan must stay quiet. A parsed document is walked through every accessor, written back
// as JSON and parsed again: the second parse must succeed and give the same tree (round trip).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/json.h"

using rustasr::JsonParseError;
using rustasr::JsonType;
using rustasr::JsonTypeError;
using rustasr::JsonValue;

namespace {

[[noreturn]] void die(const char* why) {
  std::fprintf(stderr, "fuzz_json: %s\n", why);
  std::abort();
}

void write_string(const std::string& str, std::string& out) {
  out += '"';
  for (unsigned char c : str) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

// Writes v as JSON; returns false if it holds a number with no JSON spelling (a literal beyond double range
// parses to +-inf).
bool write(const JsonValue& v, std::string& out) {
  switch (v.type()) {
    case JsonType::kNull: out += "null"; return true;
    case JsonType::kBool: out += v.as_bool() ? "true" : "false"; return true;
    case JsonType::kNumber: {
      if (v.is_integer()) {
        out += std::to_string(v.as_int64());
        return true;
      }
      const double d = v.as_number();
      if (!std::isfinite(d)) return false;
      char b[40];
      std::snprintf(b, sizeof b, "%.17g", d);
      out += b;
      return true;
    }
    case JsonType::kString: {
      write_string(v.as_string(), out);
      return true;
    }
    case JsonType::kArray: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ',';
        if (&v.at(i) != &v.elements()[i]) die("at(i) and elements()[i] disagree");
        if (!write(v.at(i), out)) return false;
      }
      out += ']';
      bool threw = false;
      try {
        v.at(v.size());
      } catch (const JsonTypeError&) {
        threw = true;
      }
      if (!threw) die("at(size()) did not throw");
      return true;
    }
    case JsonType::kObject: {
      out += '{';
      bool first = true;
      for (const auto& m : v.members()) {
        if (v.get(m.first) != &m.second) die("get(key) does not find the member");
        if (!first) out += ',';
        first = false;
        write_string(m.first, out);
        out += ':';
        if (!write(m.second, out)) return false;
      }
      out += '}';
      return true;
    }
  }
  die("unknown type");
}

bool same(const JsonValue& a, const JsonValue& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case JsonType::kNull: return true;
    case JsonType::kBool: return a.as_bool() == b.as_bool();
    case JsonType::kNumber:
      if (a.is_integer() && b.is_integer()) return a.as_int64() == b.as_int64();
      return a.as_number() == b.as_number();
    case JsonType::kString: return a.as_string() == b.as_string();
    case JsonType::kArray:
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i)
        if (!same(a.at(i), b.at(i))) return false;
      return true;
    case JsonType::kObject: {
      if (a.size() != b.size()) return false;
      const auto& ma = a.members();
      const auto& mb = b.members();
      for (size_t i = 0; i < ma.size(); ++i)
        if (ma[i].first != mb[i].first || !same(ma[i].second, mb[i].second)) return false;
      return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  JsonValue v;
  try {
    v = rustasr::parse_json(reinterpret_cast<const char*>(data), size);
  } catch (const JsonParseError& e) {
    if (e.offset() > size) die("error offset outside the input");
    if (e.code() != rustasr::ErrorCode::kInvalidConfig) die("parse error with a code other than kInvalidConfig");
    return 0;
  }
  std::string text;
  if (!write(v, text)) return 0;
  JsonValue w;
  try {
    w = rustasr::parse_json(text);
  } catch (const JsonParseError& e) {
    std::fprintf(stderr, "re-parse of %s failed: %s\n", text.c_str(), e.what());
    die("round trip does not parse");
  }
  if (!same(v, w)) die("round trip changed the document");
  return 0;
}
