// topk_policy.cu — the per-row budget of op 4 on the GPU (ops.h §4 TopkPolicy), a small kernel that
// runs after the selection kernel of topk.cu (DeepGEMM's "clean-up in its own kernel" habit: the
// radix select stays single-purpose).
//
// Contract: given indices[t, 0..K) in the fixed rule's order (what topk.cu wrote), row t keeps its
// first k_t slots and −1 fills [k_t, K); topk_length[t] = k_t when the pointer is given. k_t is the
// rule of src/common/topk_policy.h (the CPU's own), from the row's softmax statistics:
//   1. m = max over [ks, ke) of the cleaned scores (NaN ≡ −inf)            block max
//   2. Z = Σ w(s), E = Σ w(s)·(s − m) over the row, w = topk_policy_exp   block sums, fp64, fixed tree
//   3. kMass: thread 0 walks the selection best first until the prefix reaches p·Z;
//      kEntropy: k from H = log Z − E/Z.
// The sums run in a fixed order (deterministic), not the CPU's, and the compiler may fuse the
// polynomial's multiply-adds, so k_t may differ from the CPU only where the criterion sits within
// ~1e-6 relative of its threshold (ops.h).
// The selection kernel selects K keys even when the policy's cap is smaller: the cap's best keys are
// the prefix of the K best, so cutting afterwards is exact.
#include "common/topk_policy.h"
#include "cuda/indexer_common.cuh"

namespace dsa::cuda {
namespace {

constexpr int kPolicyThreads = 256;
constexpr int kPolicyWarps = kPolicyThreads / detail::kWarpSize;

// Block-wide reduction of a double (sum or max); every thread gets the result. Fixed tree order:
// a warp butterfly, then warp 0 over the kPolicyWarps partials.
template <bool kMax>
__device__ double block_reduce(double v, double* s_part /* [kPolicyWarps] */) {
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  for (int o = detail::kWarpSize / 2; o > 0; o /= 2) {
    const double other = __shfl_xor_sync(detail::kFullMask, v, o);
    v = kMax ? fmax(v, other) : v + other;
  }
  __syncthreads();   // s_part may still be read by the previous reduction
  if (lane == 0) s_part[warp] = v;
  __syncthreads();
  double r = s_part[0];
  for (int w = 1; w < kPolicyWarps; ++w) r = kMax ? fmax(r, s_part[w]) : r + s_part[w];
  return r;
}

__global__ void __launch_bounds__(kPolicyThreads) topk_policy_kernel(TopkParams p) {
  __shared__ double s_part[kPolicyWarps];
  __shared__ int s_k;
  const int t = blockIdx.x;
  // A malformed range is empty (topk.cu's convention).
  int lo = p.ks[t], hi = p.ke[t];
  if (lo < 0 || hi > p.S || lo > hi) lo = hi = 0;
  const int n = hi - lo;
  const int cap = ::dsa::detail::topk_policy_cap(p.policy, p.K);
  const float* row = p.logits + int64_t(t) * p.S;
  int32_t* out = p.indices + int64_t(t) * p.K;
  int k = cap < n ? cap : n;
  if (::dsa::detail::topk_policy_needs_stats(p.policy) && n > 0) {
    // ── 1. row max ──
    double mx = -INFINITY;
    for (int s = lo + threadIdx.x; s < hi; s += kPolicyThreads) mx = fmax(mx, double(::dsa::detail::topk_policy_clean(row[s])));
    const float m = static_cast<float>(block_reduce<true>(mx, s_part));   // a float's value: exact
    // ── 2. Z = Σ w, E = Σ w·(s − m) ──
    double z = 0.0, e = 0.0;
    const bool entropy = p.policy.kind == TopkPolicyKind::kEntropy;
    for (int s = lo + threadIdx.x; s < hi; s += kPolicyThreads) {
      const float x = ::dsa::detail::topk_policy_clean(row[s]);
      z += ::dsa::detail::topk_policy_weight(x, m);
      if (entropy) e += ::dsa::detail::topk_policy_weighted_logit(x, m);
    }
    z = block_reduce<false>(z, s_part);
    if (entropy) e = block_reduce<false>(e, s_part);
    // ── 3. the cut ──
    if (threadIdx.x == 0) {
      if (entropy) {
        s_k = ::dsa::detail::topk_policy_entropy_length(p.policy, cap, n, z, e);
      } else {
        const double target = p.policy.p * z;
        double mass = 0.0;
        int reached = 0;
        for (int j = 0; j < k && reached == 0; ++j) {
          mass += ::dsa::detail::topk_policy_weight(::dsa::detail::topk_policy_clean(row[out[j]]), m);
          if (mass >= target) reached = j + 1;
        }
        s_k = ::dsa::detail::topk_policy_mass_clamp(p.policy, cap, n, reached);
      }
    }
    __syncthreads();
    k = s_k;
  }
  for (int j = k + threadIdx.x; j < p.K; j += kPolicyThreads) out[j] = kInvalidIndex;
  if (threadIdx.x == 0 && p.topk_length != nullptr) p.topk_length[t] = k;
}

}  // namespace

namespace detail {
// Runs after the selection kernel (topk.cu) on the same stream; a no-op for the default policy
// without topk_length (today's op, no extra launch).
void topk_apply_policy(const TopkParams& p, cudaStream_t stream) {
  constexpr const char* op = "topk_select";
  const bool cut = ::dsa::detail::topk_policy_needs_stats(p.policy) || ::dsa::detail::topk_policy_cap(p.policy, p.K) < p.K;
  if (p.T == 0 || (!cut && p.topk_length == nullptr)) return;
  topk_policy_kernel<<<p.T, kPolicyThreads, 0, stream>>>(p);
  DSA_CUDA_LAUNCH_CHECK(op);
}
}  // namespace detail

}  // namespace dsa::cuda
