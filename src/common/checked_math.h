// checked_math.h — int64 size arithmetic that refuses to overflow: every product of sizes taken from
// a file or a command line (config.json keys, tensor shapes, token counts) goes through these, so a
// hostile value gives dsa::Error naming what overflowed instead of a wrapped size and a wrong
// allocation.
#pragma once

#include <cstdint>
#include <string>

#include "dsa/ops.h"

namespace dsa::detail {

// a·b; throws "<what> = a × b overflows int64" when it does not fit.
inline int64_t mul_checked(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw Error(what + " = " + std::to_string(a) + " x " + std::to_string(b) + " overflows int64");
  return r;
}
// a + b; throws "<what> = a + b overflows int64" when it does not fit.
inline int64_t add_checked(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) throw Error(what + " = " + std::to_string(a) + " + " + std::to_string(b) + " overflows int64");
  return r;
}

}  // namespace dsa::detail
