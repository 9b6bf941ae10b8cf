// attention_ref.h — float64 references of ops 6–9 (MQA attention forward/backward, indexer KL),
// written as the plain definitions of ops.h, and the problem builder the attention tests share.
// The selected set of a row is an explicit list of keys (a duplicate listed twice), so one
// reference serves both the sparse (indices) and the dense (ranges) ops.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <omp.h>
#include <vector>

#include "test_util.h"

namespace dsa::test {

using KeySets = std::vector<std::vector<int>>;   // [T] → keys of A(t) in slot order

// One attention problem with its storage; params() points into it.
struct AttnProblem {
  int T = 0, S = 0, H = 0, Dqk = 0, Dv = 0, K = 0;
  float scale = 0.0f;
  bool sparse = true;
  std::vector<float> q, kv;
  std::vector<int32_t> indices, topk_length, ks, ke;   // topk_length empty → null

  AttentionParams params() const {
    AttentionParams p;
    p.T = T; p.S = S; p.H = H; p.Dqk = Dqk; p.Dv = Dv; p.scale = scale;
    p.q = q.data();
    p.kv = kv.data();
    if (sparse) {
      p.K = K;
      p.indices = indices.data();
      p.topk_length = topk_length.empty() ? nullptr : topk_length.data();
    } else {
      p.ks = ks.data();
      p.ke = ke.data();
    }
    return p;
  }
  KeySets sets() const {
    KeySets a(T);
    for (int t = 0; t < T; ++t) {
      if (sparse) {
        const int len = topk_length.empty() ? K : topk_length[t];
        for (int k = 0; k < len; ++k)
          if (indices[static_cast<size_t>(t) * K + k] != kInvalidIndex) a[t].push_back(indices[static_cast<size_t>(t) * K + k]);
      } else {
        for (int s = ks[t]; s < ke[t]; ++s) a[t].push_back(s);
      }
    }
    return a;
  }
};

// Random q [T,H,Dqk], kv [S,Dqk] ~ N(0,1); scale = scale_mult / √Dqk.
inline AttnProblem make_problem(uint64_t seed, int T, int S, int H, int Dqk, int Dv, double scale_mult = 1.0) {
  Rng rng(seed);
  AttnProblem pr;
  pr.T = T; pr.S = S; pr.H = H; pr.Dqk = Dqk; pr.Dv = Dv;
  pr.scale = static_cast<float>(scale_mult / std::sqrt(static_cast<double>(Dqk)));
  pr.q = rng.normal_vec(static_cast<size_t>(T) * H * Dqk);
  pr.kv = rng.normal_vec(static_cast<size_t>(S) * Dqk);
  return pr;
}

// Runs fn with a single OpenMP thread (then restores the count): the determinism reruns use it
// so that they also prove the results do not depend on the thread count.
template <typename Fn>
void with_one_thread(Fn&& fn) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  fn();
  omp_set_num_threads(saved);
}

inline std::vector<double> to_f64(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

struct RefForward {
  std::vector<double> out, lse, max_logits;
};

// out[t,h] = Σ_{s∈A(t)} exp(z − lse)·kv[s,0:Dv], z = scale·q·kv[s], lse = log Σ exp z.
inline RefForward ref_attention_forward(const std::vector<double>& q, const std::vector<double>& kv, const KeySets& a,
                                        int H, int Dqk, int Dv, double scale) {
  const int T = static_cast<int>(a.size());
  const double inf = std::numeric_limits<double>::infinity();
  RefForward r;
  r.out.assign(static_cast<size_t>(T) * H * Dv, 0.0);
  r.lse.assign(static_cast<size_t>(T) * H, inf);
  r.max_logits.assign(static_cast<size_t>(T) * H, -inf);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const size_t th = static_cast<size_t>(t) * H + h;
      if (a[t].empty()) continue;
      std::vector<double> z(a[t].size());
      double mx = -inf;
      for (size_t j = 0; j < z.size(); ++j) {
        double s = 0;
        for (int d = 0; d < Dqk; ++d) s += q[th * Dqk + d] * kv[static_cast<size_t>(a[t][j]) * Dqk + d];
        z[j] = scale * s;
        mx = std::max(mx, z[j]);
      }
      double sum = 0;
      for (double v : z) sum += std::exp(v - mx);
      const double lse = mx + std::log(sum);
      r.lse[th] = lse;
      r.max_logits[th] = mx;
      for (size_t j = 0; j < z.size(); ++j) {
        const double pj = std::exp(z[j] - lse);
        for (int d = 0; d < Dv; ++d) r.out[th * Dv + d] += pj * kv[static_cast<size_t>(a[t][j]) * Dqk + d];
      }
    }
  return r;
}

struct RefBackward {
  std::vector<double> dq, dkv;
};

// The gradient of L = Σ dout∘out, from the definitions (P from an exact fp64 lse):
// dZ = P ∘ (dout·v − Δ), Δ = Σ_s P·(dout·v); dq = scale·Σ dZ·k; dkv += scale·dZ·q + P·dout (first Dv).
inline RefBackward ref_attention_backward(const std::vector<double>& q, const std::vector<double>& kv,
                                          const std::vector<double>& dout, const KeySets& a, int S, int H, int Dqk,
                                          int Dv, double scale) {
  const int T = static_cast<int>(a.size());
  const RefForward f = ref_attention_forward(q, kv, a, H, Dqk, Dv, scale);
  RefBackward r;
  r.dq.assign(static_cast<size_t>(T) * H * Dqk, 0.0);
  r.dkv.assign(static_cast<size_t>(S) * Dqk, 0.0);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const size_t th = static_cast<size_t>(t) * H + h;
      const size_t n = a[t].size();
      std::vector<double> P(n), dP(n);
      double delta = 0;
      for (size_t j = 0; j < n; ++j) {
        const size_t s = a[t][j];
        double z = 0, dp = 0;
        for (int d = 0; d < Dqk; ++d) z += q[th * Dqk + d] * kv[s * Dqk + d];
        for (int d = 0; d < Dv; ++d) dp += dout[th * Dv + d] * kv[s * Dqk + d];
        P[j] = std::exp(scale * z - f.lse[th]);
        dP[j] = dp;
        delta += P[j] * dp;
      }
      for (size_t j = 0; j < n; ++j) {
        const size_t s = a[t][j];
        const double dz = P[j] * (dP[j] - delta);
        for (int d = 0; d < Dqk; ++d) {
          r.dq[th * Dqk + d] += scale * dz * kv[s * Dqk + d];
          r.dkv[s * Dqk + d] += scale * dz * q[th * Dqk + d];
        }
        for (int d = 0; d < Dv; ++d) r.dkv[s * Dqk + d] += P[j] * dout[th * Dv + d];
      }
    }
  return r;
}

// KL reference over A(t) given as key lists plus the logit of each element (slot-aligned).
//   ps = Σ_h exp(scale·q·kv − lse_h); p = ps / Σ ps  (or ps / H when normalise_by_mass is false);
//   π = softmax(I); loss = Σ_{p>0} p(log p − log π); dI = dloss·(π − p).
struct RefKl {
  std::vector<double> loss;                 // [T]
  std::vector<std::vector<double>> dI;      // [T][|A(t)|] with dloss = 1
  std::vector<double> mass;                 // [T] Σ ps
};
inline RefKl ref_indexer_kl(const std::vector<double>& q, const std::vector<double>& kv, const std::vector<double>& lse,
                            const KeySets& a, const std::vector<std::vector<double>>& logits, int H, int Dqk,
                            double scale, bool normalise_by_mass = true) {
  const int T = static_cast<int>(a.size());
  const double inf = std::numeric_limits<double>::infinity();
  RefKl r;
  r.loss.assign(T, 0.0);
  r.dI.resize(T);
  r.mass.assign(T, 0.0);
  for (int t = 0; t < T; ++t) {
    const size_t n = a[t].size();
    r.dI[t].assign(n, 0.0);
    if (n == 0) continue;
    std::vector<double> p(n, 0.0), pi(n, 0.0);
    for (size_t j = 0; j < n; ++j)
      for (int h = 0; h < H; ++h) {
        const size_t th = static_cast<size_t>(t) * H + h;
        double z = 0;
        for (int d = 0; d < Dqk; ++d) z += q[th * Dqk + d] * kv[static_cast<size_t>(a[t][j]) * Dqk + d];
        p[j] += std::exp(scale * z - lse[th]);
      }
    double mass = 0;
    for (double v : p) mass += v;
    r.mass[t] = mass;
    const double norm = normalise_by_mass ? mass : H;
    for (double& v : p) v = norm > 0 ? v / norm : 0.0;
    double mx = -inf;
    for (double v : logits[t]) mx = std::max(mx, v);
    if (mx > -inf) {
      double sum = 0;
      for (double v : logits[t]) sum += std::exp(v - mx);
      for (size_t j = 0; j < n; ++j) pi[j] = std::exp(logits[t][j] - mx) / sum;
    }
    double kl = 0;
    for (size_t j = 0; j < n; ++j)
      if (p[j] > 0) kl += p[j] * (std::log(p[j]) - std::log(pi[j]));
    r.loss[t] = kl;
    for (size_t j = 0; j < n; ++j) r.dI[t][j] = pi[j] - p[j];
  }
  return r;
}

}  // namespace dsa::test
