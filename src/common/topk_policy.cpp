// topk_policy.cpp — validation and names of the top-k budget policies (ops.h §4), shared by every
// backend so a bad policy fails with the same message on the CPU and the GPU.
#include "common/topk_policy.h"

#include "common/check.h"

namespace dsa {

const char* topk_policy_name(TopkPolicyKind kind) {
  switch (kind) {
    case TopkPolicyKind::kFixed: return "fixed";
    case TopkPolicyKind::kMass: return "mass";
    case TopkPolicyKind::kEntropy: return "entropy";
  }
  return "unknown";
}

namespace detail {

void validate_topk_policy(const TopkPolicy& policy, int K, const char* op) {
  const auto kind = policy.kind;
  if (kind != TopkPolicyKind::kFixed && kind != TopkPolicyKind::kMass && kind != TopkPolicyKind::kEntropy)
    fail(op, "policy.kind = ", static_cast<int>(kind), " is not a top-k policy (fixed, mass or entropy)");
  const char* name = topk_policy_name(kind);
  if (policy.k_max < 0 || policy.k_max > K)
    fail(op, "policy '", name, "': k_max = ", policy.k_max, " must be in [1, K = ", K, "] (or 0 for K)");
  const int cap = topk_policy_cap(policy, K);
  if (kind == TopkPolicyKind::kFixed) return;   // p, k_min, a, b are not read
  if (policy.k_min < 1 || policy.k_min > cap)
    fail(op, "policy '", name, "': k_min = ", policy.k_min, " must be in [1, k_max = ", cap, "]");
  if (kind == TopkPolicyKind::kMass && !(policy.p > 0.0 && policy.p <= 1.0))
    fail(op, "policy '", name, "': p = ", policy.p, " must be in (0, 1]");
  if (kind == TopkPolicyKind::kEntropy) {
    if (!(policy.a > 0.0) || !std::isfinite(policy.a)) fail(op, "policy '", name, "': a = ", policy.a, " must be finite and > 0");
    if (!std::isfinite(policy.b)) fail(op, "policy '", name, "': b = ", policy.b, " must be finite");
  }
}

}  // namespace detail
}  // namespace dsa
