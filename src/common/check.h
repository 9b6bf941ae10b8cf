// check.h — argument validation shared by every backend, so a bad call fails with the same
// message on the CPU and the GPU. All checks of an op run before it writes anything.
#pragma once

#include <sstream>
#include <string>

#include "dsa/ops.h"

namespace dsa::detail {

// Builds "op: message" from streamable parts and throws dsa::Error.
template <typename... Parts>
[[noreturn]] void fail(const char* op, const Parts&... parts) {
  std::ostringstream os;
  os << op << ": ";
  (os << ... << parts);
  throw Error(os.str());
}

#define DSA_REQUIRE(cond, op, ...)            \
  do {                                        \
    if (!(cond)) ::dsa::detail::fail(op, __VA_ARGS__); \
  } while (0)

// "op: <name> is null"
inline void require_ptr(const void* p, const char* op, const char* name) {
  if (p == nullptr) fail(op, name, " is null");
}
// "op: <name> = v must be > 0"
inline void require_positive(long long v, const char* op, const char* name) {
  if (v <= 0) fail(op, name, " = ", v, " must be > 0");
}
inline void require_non_negative(long long v, const char* op, const char* name) {
  if (v < 0) fail(op, name, " = ", v, " must be >= 0");
}
inline bool is_power_of_two(long long v) { return v > 0 && (v & (v - 1)) == 0; }

// Checks 0 ≤ ks[t] ≤ ke[t] ≤ S for every row (host memory only).
void require_ranges(const int32_t* ks, const int32_t* ke, int T, int S, const char* op);
// Checks every index is −1 or in [0, S) (host memory only); indices [T, K].
void require_indices(const int32_t* idx, int T, int K, int S, const char* op, const char* name = "indices");

}  // namespace dsa::detail
