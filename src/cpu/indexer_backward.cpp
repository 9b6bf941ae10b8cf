// indexer_backward.cpp — op 10: gradients of the fp32 lightning indexer
//   forward:  u[t,h,s] = q[t,h,:]·k[s,:];   I[t,s] = Σ_h w[t,h] · ReLU(u[t,h,s])
// given dI over the selected pairs (dense: every s in [ks[t], ke[t]); sparse: the valid slots of
// indices[t, 0:K)):
//   dw[t,h] = Σ_s dI[t,s] · ReLU(u)
//   g[t,h,s] = dI[t,s] · w[t,h] · 1[u > 0]
//   dq[t,h,:] = Σ_s g · k[s,:]            dk[s,:] = Σ_{t,h} g · q[t,h,:]
// u and every sum are fp64 (sums over keys are long). Two passes, both deterministic:
//   pass 1, parallel over query rows t: dq[t], dw[t] (each row owned by one thread);
//   pass 2, parallel over keys s: dk[s] (each key owned by one thread; its pairs visited in the
//   fixed order t ascending, then slot ascending) — no order-dependent parallel accumulation.
#include <algorithm>
#include <vector>

#include "common/check.h"
#include "cpu/indexer_common.h"

namespace dsa::cpu {

namespace {

// Forward line inverted: u[t,h,s] = q[t,h,:]·k[s,:]  (recomputed in fp64, same order in both passes).
inline double dot64(const float* a, const float* b, int n) {
  double acc = 0.0;
  for (int d = 0; d < n; ++d) acc += static_cast<double>(a[d]) * static_cast<double>(b[d]);
  return acc;
}

}  // namespace

namespace detail {

void validate_indexer_backward_inputs(const IndexerBackwardParams& p, const char* op) {
  using ::dsa::detail::fail;
  const IndexerParams& f = p.fwd;
  validate_indexer_params(f, op);
  if (f.precision != Precision::kFp32) fail(op, "fwd.precision must be kFp32 (the backward is fp32 only)");
  ::dsa::detail::require_non_negative(p.K, op, "K");
  if (p.K > 0) {
    if (p.K > kMaxTopK) fail(op, "K = ", p.K, " must be in [1, kMaxTopK = ", kMaxTopK, "] (or 0 for dense dI)");
    ::dsa::detail::require_ptr(p.indices, op, "indices");
    // A selected key must lie in its row's range: outside it the forward logit is −inf (no gradient).
    for (int t = 0; t < f.T; ++t)
      for (int j = 0; j < p.K; ++j) {
        const int32_t s = p.indices[static_cast<int64_t>(t) * p.K + j];
        if (s != kInvalidIndex && (s < f.ks[t] || s >= f.ke[t]))
          fail(op, "indices[", t, ",", j, "] = ", s, " is out of range [ks, ke) = [", f.ks[t], ", ", f.ke[t],
               ") (and not -1)");
      }
  } else if (p.indices != nullptr) {
    fail(op, "indices must be null when K = 0 (dense d_logits [T,S])");
  }
}

}  // namespace detail

void indexer_backward(const IndexerBackwardParams& p) {
  constexpr const char* op = "indexer_backward";
  detail::validate_indexer_backward_inputs(p, op);
  const IndexerParams& f = p.fwd;
  const bool sparse = p.K > 0;
  ::dsa::detail::require_ptr(p.d_logits, op, "d_logits");
  ::dsa::detail::require_ptr(p.dq, op, "dq");
  ::dsa::detail::require_ptr(p.dk, op, "dk");
  ::dsa::detail::require_ptr(p.dw, op, "dw");

  const int T = f.T, S = f.S, HI = f.HI, DI = f.DI;
  const auto* q = static_cast<const float*>(f.q);
  const auto* k = static_cast<const float*>(f.k);
  const float* w = f.w;
  const float* dI = p.d_logits;

  // Visits the pairs (s, dI[t,s]) of row t in a fixed order (dense: s ascending; sparse: slots).
  auto for_each_pair = [&](int t, auto&& fn) {
    if (sparse) {
      for (int j = 0; j < p.K; ++j) {
        const int64_t slot = static_cast<int64_t>(t) * p.K + j;
        if (p.indices[slot] != kInvalidIndex) fn(p.indices[slot], static_cast<double>(dI[slot]));
      }
    } else {
      for (int s = f.ks[t]; s < f.ke[t]; ++s) fn(s, static_cast<double>(dI[static_cast<int64_t>(t) * S + s]));
    }
  };

  // ── pass 1: dq, dw per query row ──
#pragma omp parallel
  {
    std::vector<double> dq_acc(static_cast<size_t>(HI) * DI), dw_acc(static_cast<size_t>(HI));
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < T; ++t) {
      std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
      std::fill(dw_acc.begin(), dw_acc.end(), 0.0);
      for_each_pair(t, [&](int s, double g0) {
        const float* ks_row = k + static_cast<int64_t>(s) * DI;
        for (int h = 0; h < HI; ++h) {
          const int64_t th = static_cast<int64_t>(t) * HI + h;
          const double u = dot64(q + th * DI, ks_row, DI);
          if (u <= 0.0) continue;                 // ReLU'(u) = 0: no contribution to dw, dq
          dw_acc[h] += g0 * u;                    // inverts I += w·ReLU(u) w.r.t. w
          const double g = g0 * static_cast<double>(w[th]);  // g = dI·w·1[u > 0]
          double* dqh = dq_acc.data() + static_cast<size_t>(h) * DI;
          for (int d = 0; d < DI; ++d) dqh[d] += g * static_cast<double>(ks_row[d]);  // inverts u = q·k w.r.t. q
        }
      });
      for (int i = 0; i < HI * DI; ++i) p.dq[static_cast<int64_t>(t) * HI * DI + i] = static_cast<float>(dq_acc[i]);
      for (int h = 0; h < HI; ++h) p.dw[static_cast<int64_t>(t) * HI + h] = static_cast<float>(dw_acc[h]);
    }
  }

  // ── pass 2: dk per key, over the pairs that contain it ──
  // Sparse mode: a CSR list key → (t, slot), filled sequentially so the order is fixed.
  std::vector<int64_t> first(sparse ? static_cast<size_t>(S) + 1 : 0, 0);
  std::vector<int64_t> slots;
  if (sparse) {
    const int64_t total = static_cast<int64_t>(T) * p.K;
    for (int64_t i = 0; i < total; ++i)
      if (p.indices[i] != kInvalidIndex) ++first[static_cast<size_t>(p.indices[i]) + 1];
    for (int s = 0; s < S; ++s) first[s + 1] += first[s];
    slots.resize(static_cast<size_t>(first[S]));
    std::vector<int64_t> fill(first.begin(), first.end() - 1);
    for (int64_t i = 0; i < total; ++i)
      if (p.indices[i] != kInvalidIndex) slots[static_cast<size_t>(fill[p.indices[i]]++)] = i;
  }

#pragma omp parallel
  {
    std::vector<double> dk_acc(static_cast<size_t>(DI));
    auto add_pair = [&](int t, int s, double g0) {  // dk[s] += Σ_h g·q[t,h]
      const float* ks_row = k + static_cast<int64_t>(s) * DI;
      for (int h = 0; h < HI; ++h) {
        const int64_t th = static_cast<int64_t>(t) * HI + h;
        const float* qh = q + th * DI;
        const double u = dot64(qh, ks_row, DI);
        if (u <= 0.0) continue;
        const double g = g0 * static_cast<double>(w[th]);
        for (int d = 0; d < DI; ++d) dk_acc[d] += g * static_cast<double>(qh[d]);  // inverts u = q·k w.r.t. k
      }
    };
#pragma omp for schedule(dynamic, 16)
    for (int s = 0; s < S; ++s) {
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      if (sparse) {
        for (int64_t e = first[s]; e < first[s + 1]; ++e) {
          const int64_t slot = slots[static_cast<size_t>(e)];
          add_pair(static_cast<int>(slot / p.K), s, static_cast<double>(dI[slot]));
        }
      } else {
        for (int t = 0; t < T; ++t)
          if (f.ks[t] <= s && s < f.ke[t]) add_pair(t, s, static_cast<double>(dI[static_cast<int64_t>(t) * S + s]));
      }
      for (int d = 0; d < DI; ++d) p.dk[static_cast<int64_t>(s) * DI + d] = static_cast<float>(dk_acc[d]);
    }
  }
}

}  // namespace dsa::cpu
