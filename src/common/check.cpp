#include "common/check.h"

namespace dsa::detail {

void require_ranges(const int32_t* ks, const int32_t* ke, int T, int S, const char* op) {
  require_ptr(ks, op, "ks");
  require_ptr(ke, op, "ke");
  for (int t = 0; t < T; ++t) {
    if (ks[t] < 0 || ks[t] > S) fail(op, "ks[", t, "] = ", ks[t], " is outside [0, S = ", S, "]");
    if (ke[t] < ks[t] || ke[t] > S)
      fail(op, "ke[", t, "] = ", ke[t], " must satisfy ks[", t, "] = ", ks[t], " <= ke <= S = ", S);
  }
}

void require_indices(const int32_t* idx, int T, int K, int S, const char* op, const char* name) {
  require_ptr(idx, op, name);
  for (long long i = 0; i < static_cast<long long>(T) * K; ++i) {
    const int32_t v = idx[i];
    if (v != kInvalidIndex && (v < 0 || v >= S))
      fail(op, name, "[", i / K, ",", i % K, "] = ", v, " is out of range [0, ", S, ") (and not -1)");
  }
}

}  // namespace dsa::detail
