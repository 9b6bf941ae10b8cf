// indexer_kl.cu — op 9 on the GPU: the indexer's KL loss and its gradient (ops.h §9).
//   P_h[t,s] = exp(scale·q[t,h]·kv[s] − lse[t,h]),  p̃[t,s] = Σ_h P_h  (h ascending),  Z = Σ_{s∈A} p̃
//   p = p̃ / Z,  π = softmax_A(I),  loss[t] = Σ_A p (log p − log π),  dI = dloss·(π − p) on A, 0 elsewhere.
// A(t): dense mode (indices null) = [ks, ke) clamped (malformed → empty), I / dI [T, S];
//       sparse mode = the valid slots of indices[t, 0:len), len = topk_length[t] or K, as in the
//       attention ops (−1 or ≥ S invalid), I / dI [T, K]; slots ≥ len are never read, dI = 0 there.
//
// v1 (every arch): one block per query t, no workspace, deterministic.
//   Phase 1 (both ops): key chunks of kTileKeys rows in shared memory; for each group of kTileHeads
//     heads the block computes P (one (head, key) pair per thread) and adds the group's head sum to
//     p̃ in fp64. One thread then folds the chunk, keys ascending, into fp64 accumulators:
//       Z = Σ p̃,  A1 = Σ p̃ log p̃,  A2 = Σ p̃·I,  and an online logsumexp of I (m_I, s_I).
//     The forward never stores p̃: loss = (A1 − A2)/Z − log Z + lse_I  (algebraically Σ p log(p/π)),
//     +inf when some p̃ > 0 sits on an I = −inf logit (π = 0), 0 for an empty A(t).
//   Phase 2 (backward only): p̃ was parked in d_index_logits during phase 1 (the output doubles as
//     scratch); the block rewrites its row: dI = dloss·(π − p̃/Z) on A(t), 0 elsewhere.
// q / kv fp32 or bf16 (AttentionParams::dtype): each bf16 element is converted to fp32 on load (exact).
// Shared memory: keys[KC] | q[HT][ld] | kv[KC][ld] | P[HT][KC] floats | p̃[KC] doubles | 6 doubles.
#include "cuda/attention_common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kFwdOp = "indexer_kl_forward";
constexpr const char* kBwdOp = "indexer_kl_backward";

size_t kl_smem_bytes(int Dqk) {
  const size_t floats = static_cast<size_t>(attn::kTileHeads + attn::kTileKeys) * attn::padded_ld(Dqk) +
                        attn::kTileHeads * attn::kTileKeys;
  return attn::kTileKeys * sizeof(int64_t) + floats * sizeof(float) + (attn::kTileKeys + 8) * sizeof(double);
}

struct KlArgs {
  attn::SparseKeys sparse;     // used when dense == false
  attn::DenseKeys dense_keys;  // used when dense == true
  bool dense;
  int H, Dqk, S, K;
  float scale;
  attn::Elems q;               // [T, H, Dqk] either dtype
  const float *lse, *logits, *dloss;
  float* loss;                 // forward output [T] (null in backward)
  float* d_logits;             // backward output (null in forward)
};

enum Acc { kZ, kA1, kA2, kMI, kSI, kInfTerm };

template <class Keys>
__device__ void kl_row(const KlArgs& a, const Keys& keys, int64_t t) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ld = attn::padded_ld(a.Dqk);
  double* acc_s = reinterpret_cast<double*>(smem_raw);           // 8 doubles
  double* pt_s = acc_s + 8;                                       // [KC]
  int64_t* key_s = reinterpret_cast<int64_t*>(pt_s + attn::kTileKeys);
  float* q_s = reinterpret_cast<float*>(key_s + attn::kTileKeys);
  float* kv_s = q_s + attn::kTileHeads * ld;
  float* p_s = kv_s + attn::kTileKeys * ld;
  const int tid = threadIdx.x, sh = tid / attn::kTileKeys, sk = tid % attn::kTileKeys;
  const int row_len = a.dense ? a.S : a.K;                        // length of the I / dI row
  const float* I = a.logits + t * row_len;
  float* dI = a.d_logits ? a.d_logits + t * row_len : nullptr;
  int lo = 0, hi = 0;
  if (a.dense) a.dense_keys.range(t, lo, hi);
  const int n = keys.count(t);   // dense: hi − lo; sparse: topk_length[t] (or K), clamped to [0, K]
  auto slot_of = [&](int j, int64_t key) { return a.dense ? static_cast<int>(key) : j; };

  if (tid == 0) {
    acc_s[kZ] = acc_s[kA1] = acc_s[kA2] = acc_s[kSI] = acc_s[kInfTerm] = 0.0;
    acc_s[kMI] = -static_cast<double>(attn::kInf);
  }
  for (int c = 0; c < n; c += attn::kTileKeys) {
    attn::load_key_chunk(keys, t, c, n, a.Dqk, key_s, kv_s);
    if (tid < attn::kTileKeys) pt_s[tid] = 0.0;
    for (int h0 = 0; h0 < a.H; h0 += attn::kTileHeads) {
      const int nh = min(attn::kTileHeads, a.H - h0);
      __syncthreads();   // previous group's q_s / p_s readers are done
      const attn::Elems q = a.q + (t * a.H + h0) * a.Dqk;
      for (int i = tid; i < nh * a.Dqk; i += attn::kThreads) q_s[(i / a.Dqk) * ld + i % a.Dqk] = q[i];
      __syncthreads();
      float p = 0.0f;
      if (sh < nh && key_s[sk] >= 0)
        p = expf(a.scale * attn::dot_rows(q_s + sh * ld, kv_s + sk * ld, a.Dqk) - a.lse[t * a.H + h0 + sh]);
      p_s[sh * attn::kTileKeys + sk] = p;
      __syncthreads();
      if (tid < attn::kTileKeys) {
        double s = pt_s[tid];
        for (int h = 0; h < nh; ++h) s += p_s[h * attn::kTileKeys + tid];
        pt_s[tid] = s;
      }
    }
    __syncthreads();
    if (tid == 0) {
      for (int k = 0; k < attn::kTileKeys && c + k < n; ++k) {
        const int64_t key = key_s[k];
        if (key < 0) continue;
        const double pk = pt_s[k];
        const double x = I[slot_of(c + k, key)];
        acc_s[kZ] += pk;
        if (pk > 0.0) {
          acc_s[kA1] += pk * log(pk);
          if (x == -static_cast<double>(attn::kInf)) acc_s[kInfTerm] = 1.0;
          else acc_s[kA2] += pk * x;
        }
        if (x != -static_cast<double>(attn::kInf)) {
          if (x > acc_s[kMI]) {
            acc_s[kSI] = acc_s[kSI] * exp(acc_s[kMI] - x) + 1.0;
            acc_s[kMI] = x;
          } else {
            acc_s[kSI] += exp(x - acc_s[kMI]);
          }
        }
      }
    }
    if (dI && tid < attn::kTileKeys && c + tid < n) {
      const int64_t key = key_s[tid];
      dI[slot_of(c + tid, key >= 0 ? key : 0)] = key >= 0 ? static_cast<float>(pt_s[tid]) : 0.0f;
    }
    __syncthreads();
  }
  __syncthreads();
  const double Z = acc_s[kZ];
  const double lse_I = acc_s[kSI] > 0.0 ? acc_s[kMI] + log(acc_s[kSI]) : -static_cast<double>(attn::kInf);
  if (a.loss) {
    if (tid == 0) {
      double loss = 0.0;
      if (Z > 0.0)
        loss = acc_s[kInfTerm] != 0.0 ? static_cast<double>(attn::kInf)
                                       : (acc_s[kA1] - acc_s[kA2]) / Z - log(Z) + lse_I;
      a.loss[t] = static_cast<float>(loss);
    }
    return;
  }
  // Phase 2 (backward): rewrite the whole row.
  const double g = a.dloss ? a.dloss[t] : 1.0;
  for (int j = tid; j < row_len; j += attn::kThreads) {
    bool in_a;
    if (a.dense) in_a = j >= lo && j < hi;
    else in_a = j < n && keys.key(t, j) >= 0;
    float v = 0.0f;
    if (in_a && Z > 0.0) {
      const double x = I[j];
      const double pi = (x == -static_cast<double>(attn::kInf) || lse_I == -static_cast<double>(attn::kInf))
                            ? 0.0 : exp(x - lse_I);
      v = static_cast<float>(g * (pi - static_cast<double>(dI[j]) / Z));
    }
    dI[j] = v;
  }
}

__global__ void __launch_bounds__(attn::kThreads) indexer_kl_v1(KlArgs a) {
  const int64_t t = blockIdx.x;
  if (a.dense) kl_row(a, a.dense_keys, t);
  else kl_row(a, a.sparse, t);
}

void validate(const IndexerKlParams& p, const char* op) {
  attn::validate_params(p.attn, p.attn.indices != nullptr, op, /*check_dv=*/false);
  ::dsa::detail::require_ptr(p.lse, op, "lse");
  ::dsa::detail::require_ptr(p.index_logits, op, "index_logits");
}

void launch(const IndexerKlParams& p, const float* dloss, float* loss, float* d_logits, cudaStream_t stream,
            const char* op) {
  const AttentionParams& at = p.attn;
  const size_t smem = kl_smem_bytes(at.Dqk);
  attn::set_smem(indexer_kl_v1, smem, op);
  if (at.T == 0) return;
  const KlArgs a{attn::sparse_keys(at), attn::dense_keys(at), at.indices == nullptr, at.H, at.Dqk, at.S, at.K,
                 at.scale, attn::q_elems(at), p.lse, p.index_logits, dloss, loss, d_logits};
  indexer_kl_v1<<<at.T, attn::kThreads, smem, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void indexer_kl_forward(const IndexerKlParams& p, float* loss, cudaStream_t stream) {
  validate(p, kFwdOp);
  ::dsa::detail::require_ptr(loss, kFwdOp, "loss");
  launch(p, nullptr, loss, nullptr, stream, kFwdOp);
}

void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits, cudaStream_t stream) {
  validate(p, kBwdOp);
  ::dsa::detail::require_ptr(d_index_logits, kBwdOp, "d_index_logits");
  launch(p, dloss, nullptr, d_index_logits, stream, kBwdOp);
}

}  // namespace dsa::cuda
