// json.cpp — strict recursive-descent JSON (RFC 8259) with a depth limit; see json.h.
#include "model/json.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <unordered_set>

namespace dsa::json {
namespace {

constexpr int kMaxDepth = 64;   // headers and configs are shallow; bounds recursion on hostile input

class Parser {
 public:
  Parser(const char* d, size_t n, const std::string& label) : d_(d), n_(n), label_(label) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (i_ != n_) error("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    std::ostringstream os;
    os << label_ << ": JSON error at byte " << i_ << ": " << what;
    throw Error(os.str());
  }
  void skip_ws() {
    while (i_ < n_ && (d_[i_] == ' ' || d_[i_] == '\t' || d_[i_] == '\n' || d_[i_] == '\r')) ++i_;
  }
  bool literal(const char* lit) {
    size_t k = 0;
    while (lit[k] != '\0') {
      if (i_ + k >= n_ || d_[i_ + k] != lit[k]) return false;
      ++k;
    }
    i_ += k;
    return true;
  }
  Value value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than 64");
    skip_ws();
    if (i_ >= n_) error("unexpected end of input");
    Value v;
    const char c = d_[i_];
    if (c == '{') {
      v.kind = Value::Kind::kObject;
      ++i_;
      skip_ws();
      if (i_ < n_ && d_[i_] == '}') { ++i_; return v; }
      std::unordered_set<std::string> seen;
      for (;;) {
        skip_ws();
        if (i_ >= n_ || d_[i_] != '"') error("expected a member name");
        const size_t key_at = i_;
        std::string key = string();
        if (!seen.insert(key).second) {
          i_ = key_at;
          error("duplicate key " + quote(key));
        }
        skip_ws();
        if (i_ >= n_ || d_[i_] != ':') error("expected ':'");
        ++i_;
        v.keys.push_back(std::move(key));
        v.values.push_back(value(depth + 1));
        skip_ws();
        if (i_ < n_ && d_[i_] == ',') { ++i_; continue; }
        if (i_ < n_ && d_[i_] == '}') { ++i_; return v; }
        error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Value::Kind::kArray;
      ++i_;
      skip_ws();
      if (i_ < n_ && d_[i_] == ']') { ++i_; return v; }
      for (;;) {
        v.items.push_back(value(depth + 1));
        skip_ws();
        if (i_ < n_ && d_[i_] == ',') { ++i_; continue; }
        if (i_ < n_ && d_[i_] == ']') { ++i_; return v; }
        error("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Value::Kind::kString;
      v.text = string();
      return v;
    }
    if (literal("true")) { v.kind = Value::Kind::kBool; v.boolean = true; return v; }
    if (literal("false")) { v.kind = Value::Kind::kBool; return v; }
    if (literal("null")) return v;
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    error("unexpected character");
  }
  Value number() {
    const size_t start = i_;
    if (d_[i_] == '-') ++i_;
    auto digits = [&] {
      const size_t s = i_;
      while (i_ < n_ && d_[i_] >= '0' && d_[i_] <= '9') ++i_;
      if (i_ == s) error("expected a digit");
    };
    if (i_ < n_ && d_[i_] == '0') ++i_; else digits();
    if (i_ < n_ && d_[i_] == '.') { ++i_; digits(); }
    if (i_ < n_ && (d_[i_] == 'e' || d_[i_] == 'E')) {
      ++i_;
      if (i_ < n_ && (d_[i_] == '+' || d_[i_] == '-')) ++i_;
      digits();
    }
    Value v;
    v.kind = Value::Kind::kNumber;
    v.text.assign(d_ + start, i_ - start);
    v.number = std::strtod(v.text.c_str(), nullptr);
    return v;
  }
  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t hex4() {
    if (i_ + 4 > n_) error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = d_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
      else error("bad hex digit in \\u escape");
    }
    return v;
  }
  std::string string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (i_ >= n_) error("unterminated string");
      const unsigned char c = static_cast<unsigned char>(d_[i_++]);
      if (c == '"') return out;
      if (c < 0x20) error("control character in string");
      if (c != '\\') { out += static_cast<char>(c); continue; }
      if (i_ >= n_) error("unterminated escape");
      const char e = d_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i_ + 1 < n_ && d_[i_] == '\\' && d_[i_ + 1] == 'u') {
            i_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: error("bad escape");
      }
    }
  }

  const char* d_;
  size_t n_;
  size_t i_ = 0;
  const std::string& label_;
};

}  // namespace

const Value* Value::get(const std::string& key) const {
  if (kind != Kind::kObject) return nullptr;
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &values[i];
  return nullptr;
}

bool Value::is_integer() const {
  return kind == Kind::kNumber && text.find_first_of(".eE") == std::string::npos;
}

Value parse(const char* data, size_t size, const std::string& label) {
  Parser p(data, size, label);
  return p.document();
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace dsa::json
