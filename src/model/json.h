// json.h — a small strict JSON reader/writer for config.json and safetensors headers. Bounded
// recursion depth, no reads past the input, every syntax error → dsa::Error with the byte offset.
// An object with the same member name twice is refused (RFC 8259 leaves it open; here it is an error
// rather than a silent choice of one of the values).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dsa/ops.h"

namespace dsa::json {

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0.0;
  std::string text;                                    // string value, or a number's literal text
  std::vector<Value> items;                            // array
  std::vector<std::string> keys;                       // object member names, in file order
  std::vector<Value> values;                           // object member values (same order)

  const Value* get(const std::string& key) const;      // object member or null
  bool is_integer() const;                             // a number literal without fraction/exponent
};

// Parses `text`; `label` prefixes error messages ("<label>: JSON error at byte N: …").
Value parse(const char* data, size_t size, const std::string& label);
inline Value parse(const std::string& s, const std::string& label) { return parse(s.data(), s.size(), label); }

std::string quote(const std::string& s);               // JSON string literal with escapes

}  // namespace dsa::json
