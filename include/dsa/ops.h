// dsa/ops.h — THE op catalogue of dsa (DeepSeek Sparse Attention).
//
// Every op is declared here once, with its shapes, dtypes, math and conventions. The CPU backend
// (namespace dsa::cpu, src/cpu/) is the specification; the CUDA backend (namespace dsa::cuda,
// include/dsa/cuda_ops.h, src/cuda/) takes the same parameter structs with device pointers plus a
// stream. docs/dsa.md derives every formula; tests/ops_test.cpp checks every op on every backend.
//
// ───────────────────────────────────────── Vocabulary ─────────────────────────────────────────
//   T   queries (rows)                       S   keys (cache slots / columns)
//   H   main-attention query heads           Dqk main q/k dim (576 in V3.2 MQA mode), Dv value dim (512)
//   HI  indexer heads (64 in V3.2)           DI  indexer head dim (128 in V3.2)
//   K   top-k budget (2048 in V3.2)          N   generic row count of element-wise ops
// Tensors are dense row-major, the LAST index fastest: q [T,H,Dqk] is q[(t*H + h)*Dqk + d].
//
// ───────────────────────────────────────── Conventions ────────────────────────────────────────
//   * Invalid index = kInvalidIndex (−1). Selections are [T,K] int32, unfilled slots −1.
//   * Causality and packed batches are key ranges [ks[t], ke[t]) per query (DeepGEMM's contract):
//     0 ≤ ks[t] ≤ ke[t] ≤ S. An empty range (ks == ke) is a row with no valid key.
//   * LSE is natural-log: lse[t,h] = log Σ_s exp(scale · q[t,h]·k[s]).
//   * The softmax scale is always an explicit argument (V3.2 uses 192^-0.5·mscale², not Dqk^-0.5).
//   * A row with no valid key: out = 0, lse = +inf (FlashMLA HEAD), max_logits = −inf, KL loss = 0,
//     and every gradient of that row = 0.
//   * Top-k order: descending score; ties broken by the smaller key index; NaN scores count as −inf
//     (but are still in range, so a row with L ≥ K in-range keys always fills all K slots).
//   * Scores are fp32 storage; the CPU backend accumulates in fp64 where a sum spans a long axis
//     (softmax denominators, head sums of the KL target, gradient reductions over keys).
//   * Bad arguments throw dsa::Error naming the argument, before any output is written.
//
// ───────────────────────────────────────── Catalogue ──────────────────────────────────────────
//   1  fp8/bf16 numerics, block quantisation, the two cache records   (src/cpu/numerics.cpp)
//   2  hadamard_transform, rope_forward/backward, rope_inv_freq        (src/cpu/rotations.cpp)
//   3  indexer_logits                                                  (src/cpu/indexer.cpp)
//   4  topk_select                                                     (src/cpu/topk.cpp)
//   5  indexer_topk  (fused, O(T·K) memory)                            (src/cpu/indexer.cpp)
//   6  sparse_attention_forward   7 sparse_attention_backward          (src/cpu/sparse_attention.cpp)
//   8  dense_attention_forward / dense_attention_backward              (src/cpu/dense_attention.cpp)
//   9  indexer_kl_forward / indexer_kl_backward                        (src/cpu/indexer_kl.cpp)
//  10  indexer_backward                                                (src/cpu/indexer_backward.cpp)
//  11  indexer_logits_paged, paged_to_physical, sparse_attention_decode (src/cpu/decode.cpp)
//  12  model layers: linear, rmsnorm, layernorm, swiglu, embedding, cross_entropy (src/cpu/layers.cpp)
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace dsa {

// ── Named constants ────────────────────────────────────────────────────────────────────────────
inline constexpr int32_t kInvalidIndex = -1;
inline constexpr int kQuantBlock = 128;             // elements per FP8 scale group (V3.2 block_size)
inline constexpr float kFp8E4m3Max = 448.0f;        // largest finite e4m3 "fn" value; no inf
inline constexpr float kQuantAmaxFloor = 1e-4f;     // act_quant clamps amax from below
inline constexpr int kMlaLatentDim = 512;           // NoPE latent = V dims of the MQA-mode KV
inline constexpr int kMlaRopeDim = 64;              // bf16 RoPE tail of the MLA record
inline constexpr int kMlaRecordBytes = 656;         // 512 e4m3 + 4 fp32 scales + 64 bf16
inline constexpr int kIndexerKeyDim = 128;          // DI of the V3.2 indexer cache record
inline constexpr int kIndexerRecordBytes = 132;     // 128 e4m3 + 1 fp32 scale
inline constexpr int kCachePageTokens = 64;         // page size of both paged caches
// Indexer cache page (IndexerCacheParams): 64 keys of 128 e4m3 bytes, then their 64 fp32 scales.
inline constexpr int64_t kIndexerPageBytes = int64_t{kCachePageTokens} * kIndexerRecordBytes;         // 8448
inline constexpr int64_t kIndexerPageScaleOffset = int64_t{kCachePageTokens} * kIndexerKeyDim;        // 8192
inline constexpr int kMaxTopK = 8192;

// ── Errors ─────────────────────────────────────────────────────────────────────────────────────
// Thrown for every bad argument (shape, null pointer, range, index). The message names the op and
// the argument, e.g. "sparse_attention_forward: indices[3,17] = 99 is out of range [0, 64)".
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument(what) {}
};

// ═══════════════════════════════ 1. Numerics and cache records ═══════════════════════════════
// FP8 e4m3 "fn": 1 sign, 4 exponent (bias 7), 3 mantissa bits; max ±448; 0x7F/0xFF are NaN; no inf.
// Conversion from float is round-to-nearest-even with saturation to ±448 (inf saturates too);
// NaN maps to 0x7F (sign kept: 0xFF for −NaN). Subnormals (exponent 0) are exact multiples of 2^-9.
// bf16: the upper 16 bits of an fp32, rounded to nearest even; NaN stays NaN (quiet).
namespace cpu {
uint8_t fp8_e4m3_from_float(float x);
float fp8_e4m3_to_float(uint8_t bits);
uint16_t bf16_from_float(float x);
float bf16_to_float(uint16_t bits);
}  // namespace cpu

// How a block's scale is chosen from its amax (amax floored at kQuantAmaxFloor):
//   kFloat: s = amax / 448                         (FlashMLA / DeepGEMM test quantisers)
//   kUe8m0: s = 2^ceil(log2(amax / 448))           (V3.2 config scale_fmt = "ue8m0")
enum class ScaleFormat { kFloat, kUe8m0 };

// fp8_block_quantize: x [N, C] fp32 (C % 128 == 0) → q [N, C] e4m3, scales [N, C/128] fp32.
//   For every row n and block b: s = scale(amax |x[n, 128b : 128b+128)|), q = e4m3(x / s).
// fp8_block_dequantize: the inverse map x[n, c] = e4m3_to_float(q[n, c]) · scales[n, c/128]
//   (Fp8BlockDequantizeParams: the same arrays with the directions of its reads and writes).
struct Fp8BlockQuantizeParams {
  int64_t N = 0;
  int C = 0;
  ScaleFormat format = ScaleFormat::kUe8m0;
  const float* x = nullptr;   // [N, C]
  uint8_t* q = nullptr;       // [N, C]
  float* scales = nullptr;    // [N, C/128]
};
struct Fp8BlockDequantizeParams {
  int64_t N = 0;
  int C = 0;
  const uint8_t* q = nullptr;     // [N, C]
  const float* scales = nullptr;  // [N, C/128]
  float* x = nullptr;             // [N, C]
};

// MLA latent cache record (V3.2 / FlashMLA FP8 format), one per token slot, 656 bytes:
//   bytes [0, 512)   e4m3 of the 512 NoPE latent dims, quantised in 4 blocks of 128
//   bytes [512, 528) 4 fp32 block scales (ScaleFormat; FlashMLA's test quantiser uses kFloat)
//   bytes [528, 656) 64 bf16 RoPE dims (not quantised)
// Slot i lives at byte i·656; a page of 64 slots is 64·656 contiguous bytes.
// Pack: kv [N, 576] fp32 → records [N·656]. Unpack: records → kv [N, 576] fp32 (dequantised).
struct MlaCacheParams {
  int64_t N = 0;
  ScaleFormat format = ScaleFormat::kFloat;
  float* kv = nullptr;        // [N, 576]   (input of pack, output of unpack)
  uint8_t* records = nullptr; // [N, 656]   (output of pack, input of unpack)
};

// Indexer K cache (DeepGEMM paged layout), 132 bytes per token slot, pages of 64 slots:
//   page p occupies bytes [p·64·132, (p+1)·64·132): first 64×128 e4m3 (slot-major), then 64 fp32
//   scales. Slot i = p·64 + o: fp8 at p·8448 + o·128, scale at p·8448 + 8192 + o·4.
// Pack: k [N, 128] fp32 → cache [ceil(N/64)·64·132] (slots ≥ N of the last page are zeroed).
// Unpack: cache → k [N, 128] fp32 (dequantised), k_fp8 [N,128] and k_scale [N] optional outputs.
struct IndexerCacheParams {
  int64_t N = 0;
  ScaleFormat format = ScaleFormat::kUe8m0;
  float* k = nullptr;           // [N, 128]
  uint8_t* cache = nullptr;     // [ceil(N/64)·8448]
  uint8_t* k_fp8 = nullptr;     // unpack only, may be null: [N, 128]
  float* k_scale = nullptr;     // unpack only, may be null: [N]
};

namespace cpu {
void fp8_block_quantize(const Fp8BlockQuantizeParams& p);
void fp8_block_dequantize(const Fp8BlockDequantizeParams& p);
void mla_cache_pack(const MlaCacheParams& p);
void mla_cache_unpack(const MlaCacheParams& p);
void indexer_cache_pack(const IndexerCacheParams& p);
void indexer_cache_unpack(const IndexerCacheParams& p);
}  // namespace cpu

// ═══════════════════════════════ 2. Rotations ═══════════════════════════════════════════════
// hadamard_transform: x [N, D] in place, D a power of two (1..32768):
//   x[n] ← (1/√D) · H_D · x[n], H_D the Sylvester Hadamard matrix (H_2 = [[1,1],[1,−1]]).
//   Orthonormal and self-inverse, so it is its own backward.
//
// RoPE on R dims starting at `offset` inside each [D] vector of x [T, H, D], position pos[t]:
//   angle_i = pos[t] · inv_freq[i],  i in [0, R/2)   (formed in fp64: in fp32 it is off by up to
//             ~1e-2 rad at pos ≈ 1.3e5, beyond the test tolerance; tests use positions to 131071)
//   kInterleaved (GPT-J; main MLA, on its LAST 64 dims):  pairs (offset+2i, offset+2i+1)
//   kRotateHalf  (NeoX; the indexer, on its FIRST 64 dims): pairs (offset+i, offset+i+R/2)
//   each pair (a, b) ← (a·cos − b·sin, a·sin + b·cos).
// rope_backward applies the transposed rotation (angle → −angle) to a gradient in place.
enum class RopeLayout { kInterleaved, kRotateHalf };

struct RopeParams {
  int T = 0, H = 0, D = 0;
  int offset = 0, R = 0;                 // rotated dims [offset, offset + R), R even
  RopeLayout layout = RopeLayout::kInterleaved;
  const int32_t* pos = nullptr;          // [T] absolute positions, ≥ 0
  const float* inv_freq = nullptr;       // [R/2]
  float* x = nullptr;                    // [T, H, D] in place
};

// YaRN scaling as in DeepSeek-V3 (rope_scaling of config.json). factor ≤ 1 disables it.
struct YarnScaling {
  double factor = 1.0;                   // rope_factor (40 in V3.2)
  int original_max_position = 4096;      // original_seq_len
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 1.0, mscale_all_dim = 0.0;
};

// rope_inv_freq: inv_freq[i] = theta^(−2i/R), blended with inv_freq/factor by YaRN's linear ramp
// between the correction dims of beta_fast and beta_slow (DeepSeek precompute_freqs_cis).
// yarn_softmax_mscale: 0.1·mscale·ln(factor) + 1 when factor > 1, else 1 (the attention scale is
// multiplied by its square).
namespace cpu {
void hadamard_transform(float* x, int64_t N, int D);
void rope_forward(const RopeParams& p);
void rope_backward(const RopeParams& p);
void rope_inv_freq(int R, double theta, const YarnScaling& yarn, float* inv_freq);
double yarn_softmax_mscale(const YarnScaling& yarn);
}  // namespace cpu

// ═══════════════════════════════ 3–5, 10. Lightning indexer ══════════════════════════════════
// I[t,s] = k_scale[s] · Σ_h w[t,h] · ReLU(q[t,h,:] · k[s,:])     for s in [ks[t], ke[t])
// I[t,s] = −inf                                                  outside the range ("cleaned").
// Precision of q and k (w and the output are fp32 in every mode):
//   kFp32: q, k float; k_scale must be null (≡ 1).
//   kBf16: q, k are bf16 bit patterns (uint16); products exact in fp32; k_scale null.
//   kFp8 : q, k are e4m3 bytes (DeepGEMM fp8_mqa_logits): the per-head q scale is already folded
//          into w, k_scale [S] fp32 is applied after the head sum. indexer_quantize_fp8 prepares
//          exactly these from fp32 q, k, w (V3.2 Indexer.forward steps 5 and 7).
// The head sum runs in a fixed order h = 0..HI−1 in every backend path (fused ≡ unfused bitwise).
enum class Precision { kFp32, kBf16, kFp8 };

struct IndexerParams {
  int T = 0, S = 0, HI = 0, DI = 0;
  Precision precision = Precision::kFp32;
  const void* q = nullptr;          // [T, HI, DI]  float / bf16 bits / e4m3 bytes
  const void* k = nullptr;          // [S, DI]      same dtype as q
  const float* k_scale = nullptr;   // [S] kFp8 only
  const float* w = nullptr;         // [T, HI]
  const int32_t* ks = nullptr;      // [T]
  const int32_t* ke = nullptr;      // [T]
};

// indexer_quantize_fp8: fp32 q [T,HI,DI], k [S,DI], w [T,HI] (DI % 128 == 0) →
//   q_fp8, q scales s_q[t,h] per 128-block (DI == 128: one per head), k_fp8 [S,DI], k_scale [S]
//   (DI == 128 required for k: one scale per token), w_folded[t,h] = w[t,h] · s_q[t,h].
struct IndexerQuantizeParams {
  int T = 0, S = 0, HI = 0, DI = 0;
  ScaleFormat format = ScaleFormat::kUe8m0;
  const float* q = nullptr;         // [T, HI, DI]
  const float* k = nullptr;         // [S, DI]
  const float* w = nullptr;         // [T, HI]
  uint8_t* q_fp8 = nullptr;         // [T, HI, DI]
  uint8_t* k_fp8 = nullptr;         // [S, DI]
  float* k_scale = nullptr;         // [S]
  float* w_folded = nullptr;        // [T, HI]
};

// indexer_backward (fp32 path, inverts I = Σ_h w·ReLU(q·k)):
//   given dI (dense: [T,S] over the ranges; sparse: [T,K] at indices, −1 slots ignored)
//   u[t,h,s] = q[t,h]·k[s];  g = dI[t,s]·w[t,h]·1[u > 0]
//   dw[t,h] = Σ_s dI[t,s]·ReLU(u);   dq[t,h] = Σ_s g·k[s];   dk[s] += Σ_{t,h} g·q[t,h]
// Gradients are written (not accumulated). Requires precision == kFp32. Sparse mode: every index
// is −1 or inside its row's range [ks[t], ke[t]) (else an error); dense mode: indices must be null.
struct IndexerBackwardParams {
  IndexerParams fwd;                  // q, k, w, ranges as in the forward (kFp32)
  int K = 0;                          // > 0 with indices: sparse dI [T,K]; 0: dense dI [T,S]
  const int32_t* indices = nullptr;   // [T, K] or null
  const float* d_logits = nullptr;    // [T, K] or [T, S]
  float* dq = nullptr;                // [T, HI, DI]
  float* dk = nullptr;                // [S, DI]
  float* dw = nullptr;                // [T, HI]
};

namespace cpu {
void indexer_quantize_fp8(const IndexerQuantizeParams& p);
// 3. logits [T, S] fp32 (row stride S), −inf outside [ks, ke).
void indexer_logits(const IndexerParams& p, float* logits);
// 5. fused logits + top-k: same indices as topk_select(indexer_logits(p)), bit-identical, without
//    ever holding the [T, S] logits (memory O(T·K + one block of keys per thread); on AVX-512 CPUs
//    both ops also hold one fp32 copy of k in key-tile layout, S·DI floats, for the call).
void indexer_topk(const IndexerParams& p, int K, int32_t* indices);
// 10.
void indexer_backward(const IndexerBackwardParams& p);
}  // namespace cpu

// ═══════════════════════════════ 4. Top-k selection ═════════════════════════════════════════
// indices[t, 0..K) = the min(K, ke−ks) keys s in [ks[t], ke[t]) with the largest logits[t, s],
// in descending order of score, ties → smaller s first, NaN ≡ −inf; the remaining slots −1.
// 1 ≤ K ≤ kMaxTopK. Entries outside the range are never read.
//
// Per-row budget (TopkPolicy): row t keeps the first k_t of that order (a prefix, so ties and order
// are those of the fixed rule), slots [k_t, K) are −1, and topk_length[t] = k_t when the pointer is
// given (it then feeds AttentionParams / SparseDecodeParams::topk_length and IndexerKlParams). With
// n_t = ke[t] − ks[t] keys in range and cap = k_max (0: K):
//   kFixed:   k_t = min(cap, n_t). With k_max = 0 this is the rule above, bit for bit.
//   kMass:    k_t = min(n_t, clamp(k*, k_min, cap)), k* = the smallest k whose softmax mass
//             Σ_{j<k} π[t, sel_j] reaches p, π = softmax of logits[t, ks:ke] (NaN ≡ −inf; a row of
//             only −inf counts as uniform, +inf keys share the whole mass). p = 1 keeps every key of
//             the row (the exact limit; no rounding decides it), so p = 1 with cap ≥ n_t ≡ dense.
//   kEntropy: k_t = min(n_t, clamp(ceil(a · exp(b · H_t)), k_min, cap)), H_t = −Σ π log π (nats) of the
//             same softmax: exp(H_t) is the row's effective number of keys, a and b a fitted model of
//             how many of them the attention needs (train::calibrate_topk_policy fits them).
// The softmax weights are fp32 (relative error ≲ 2^-22), summed in fp64; backends may order the sums
// differently, so k_t may differ between backends only where the criterion sits within ≈ 1e-6
// relative of its threshold.
enum class TopkPolicyKind { kFixed, kMass, kEntropy };
struct TopkPolicy {
  TopkPolicyKind kind = TopkPolicyKind::kFixed;
  double p = 1.0;                   // kMass: target mass, in (0, 1]
  int k_min = 1;                    // kMass / kEntropy: lower clamp, in [1, cap]
  int k_max = 0;                    // every kind: upper clamp in [1, K]; 0 = K
  double a = 1.0, b = 1.0;          // kEntropy: k = ceil(a · exp(b·H)); a > 0, b finite
};
const char* topk_policy_name(TopkPolicyKind kind);   // "fixed", "mass", "entropy"

struct TopkParams {
  int T = 0, S = 0, K = 0;
  const float* logits = nullptr;    // [T, S]
  const int32_t* ks = nullptr;      // [T]
  const int32_t* ke = nullptr;      // [T]
  int32_t* indices = nullptr;       // [T, K]
  TopkPolicy policy = {};           // default: kFixed at K, today's rule
  int32_t* topk_length = nullptr;   // [T] out, k_t; may be null (the −1 fill says the same)
};
namespace cpu {
void topk_select(const TopkParams& p);
}

// ═══════════════════════════════ 6–8. Attention (MLA in MQA mode) ════════════════════════════
// One latent KV row per key, shared by all H query heads; V = the first Dv dims of that row.
//   z[t,h,s] = scale · q[t,h,:]·kv[s,:]                      (Dqk dims)
//   lse[t,h] = log Σ_{s∈A(t)} exp z[t,h,s]                   (natural log; +inf if A(t) = ∅)
//   out[t,h,:] = Σ_{s∈A(t)} exp(z − lse) · kv[s, 0:Dv]
// Sparse: A(t) = the valid entries of indices[t, 0:len) with len = topk_length ? topk_length[t] : K
//   (a duplicated index counts twice, as in FlashMLA). Index −1 is invalid; any other index
//   outside [0, S) is an error on the CPU. Causality must already be in the indices.
// Dense:  A(t) = [ks[t], ke[t]).
// Backward (FlashAttention-2 algebra, P = exp(z − lse), Δ[t,h] = out[t,h]·dout[t,h]):
//   dP = dout·V_sᵀ;  dZ = P ∘ (dP − Δ);  dq = scale · Σ_s dZ·kv[s];
//   dkv[s, :] = scale · Σ_{t,h} dZ·q[t,h]  (K role, Dqk dims)  +  Σ_{t,h} P·dout[t,h]  (V role, first Dv)
// Element type of a tensor argument that may come in more than one type. bf16 tensors hold bf16 bit
// patterns (uint16_t, cpu::bf16_from_float); the fp32 form is the reference path.
enum class DType { kF32, kBF16 };

// q and kv come in one dtype (DType): fp32 in q / kv, or bf16 in q_bf16 / kv_bf16 (the other pair
// null). Every backend accepts both; the CPU computes bf16 inputs exactly (bf16 → fp32 is exact), the
// GPU's tensor-core variants take bf16 (cuda_ops.h: which variant runs for which dtype).
struct AttentionParams {
  int T = 0, S = 0, H = 0, Dqk = 0, Dv = 0;
  float scale = 0.0f;                    // explicit softmax scale, > 0
  DType dtype = DType::kF32;             // of q and kv
  const float* q = nullptr;              // [T, H, Dqk]   dtype kF32
  const float* kv = nullptr;             // [S, Dqk]      dtype kF32
  const uint16_t* q_bf16 = nullptr;      // [T, H, Dqk]   dtype kBF16
  const uint16_t* kv_bf16 = nullptr;     // [S, Dqk]      dtype kBF16
  // sparse selection (sparse_* ops): indices [T, K] and optional topk_length [T] (each ≤ K)
  int K = 0;
  const int32_t* indices = nullptr;
  const int32_t* topk_length = nullptr;
  // dense ranges (dense_* ops): [T] each
  const int32_t* ks = nullptr;
  const int32_t* ke = nullptr;
};

struct AttentionForwardOut {
  float* out = nullptr;                  // [T, H, Dv]
  float* lse = nullptr;                  // [T, H]
  float* max_logits = nullptr;           // [T, H], may be null; −inf for empty rows
};

struct AttentionBackwardArgs {
  const float* dout = nullptr;           // [T, H, Dv]
  const float* out = nullptr;            // [T, H, Dv] from the forward
  const float* lse = nullptr;            // [T, H]     from the forward
  float* dq = nullptr;                   // [T, H, Dqk]
  float* dkv = nullptr;                  // [S, Dqk]
};

namespace cpu {
void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o);
void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b);
void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o);
void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b);
}  // namespace cpu

// ═══════════════════════════════ 9. Indexer KL loss ══════════════════════════════════════════
// The indexer's training target, recomputed from the main attention (q, kv, saved lse), never
// materialising [H, T, S]:
//   P_h[t,s] = exp(scale · q[t,h]·kv[s] − lse[t,h]),   p[t,s] = Σ_h P_h[t,s] / Σ_{s'∈A(t)} Σ_h P_h[t,s']
//   π[t,s]   = softmax over A(t) of I[t,·]
//   loss[t]  = Σ_{s∈A(t)} p·(log p − log π)      (terms with p = 0 contribute 0)
//   dI[t,s]  = dloss[t] · (π[t,s] − p[t,s])        for s ∈ A(t); 0 elsewhere
// A(t): dense mode (indices == null) = [ks[t], ke[t]), index logits I [T, S];
//       sparse mode = the valid slots of indices[t, 0:len) (len = attn.topk_length[t] if given, else K,
//       as in op 6), index logits I [T, K] slot-aligned with
//       indices (both p and π renormalised on the selected set, dsa-spec §4 Eq. 4).
// An empty A(t) gives loss 0 and dI 0. −inf logits inside A(t) get π = 0 (and dI = −dloss·p).
struct IndexerKlParams {
  AttentionParams attn;                  // q, kv, scale, H, Dqk; ks/ke (dense) or indices/K (sparse)
  const float* lse = nullptr;            // [T, H] of the main attention over the same A(t)
  const float* index_logits = nullptr;   // [T, S] dense or [T, K] sparse
};
namespace cpu {
void indexer_kl_forward(const IndexerKlParams& p, float* loss /* [T] */);
// dloss may be null (≡ 1 for every row); d_index_logits has the shape of index_logits.
void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits);
}  // namespace cpu

// ═══════════════════════════════ 11. Decode over paged caches ════════════════════════════════
// The decode-time forms of ops 3 and 6 (DeepGEMM fp8_paged_mqa_logits, FlashMLA sparse decode).
// B requests, each with next_n ∈ {1, 2} query rows (2 = MTP verification); row r = b·next_n + n.
//
// indexer_logits_paged: the index-K cache is paged (IndexerCacheParams layout, pages of 64 slots);
//   logical key j of request b lives in slot block_table[b, j/64]·64 + j%64.
//   logits[r, j] = k_scale[slot] · Σ_h w[r,h] · ReLU(q_fp8[r,h]·k_fp8[slot])  for j < context_lens[r]
//   logits[r, j] = −inf for context_lens[r] ≤ j < max_context_len (always cleaned, unlike DeepGEMM's
//   default), so topk_select with ks = 0, ke = context_lens applies directly.
//   context_lens is 2-D [B, next_n] as in DeepGEMM HEAD; for MTP row n of a request whose cache holds
//   L tokens, context_lens = L − next_n + n + 1.
// paged_to_physical: rewrites logical top-k indices [B·next_n, K] in place into physical slots
//   (page·64 + offset) through block_table; −1 stays −1. FlashMLA's sparse decode takes these.
//
// sparse_attention_decode: MQA-mode attention of q [B, next_n, H, 576] over the MLA latent cache at
//   physical slots indices [B, next_n, K] (−1 invalid; topk_length [B·next_n] optional), with the
//   cache in one of three formats: kFp32 [slots, 576] float, kBf16 [slots, 576] bf16 bits, or
//   kFp8Record [slots, 656] bytes (dequantised on the fly: e4m3 · block scale, bf16 RoPE part).
//   Same math as sparse_attention_forward; out [B, next_n, H, 512] and lse [B, H, next_n]
//   (FlashMLA's decode lse layout), lse = +inf / out = 0 for rows with no valid slot.
enum class KvCacheFormat { kFp32, kBf16, kFp8Record };

struct PagedIndexerParams {
  int B = 0, next_n = 1, HI = 0;                // DI = kIndexerKeyDim (128)
  int num_pages = 0, max_blocks = 0;            // cache pages; block_table row length
  int max_context_len = 0;                      // logits row length, ≥ every context_lens entry
  const uint8_t* q_fp8 = nullptr;               // [B, next_n, HI, 128] e4m3
  const uint8_t* cache = nullptr;               // [num_pages · 64 · 132] (IndexerCacheParams layout)
  const float* w = nullptr;                     // [B·next_n, HI], q scales folded in
  const int32_t* context_lens = nullptr;        // [B, next_n]
  const int32_t* block_table = nullptr;         // [B, max_blocks] page ids
};

struct SparseDecodeParams {
  int B = 0, next_n = 1, H = 0, K = 0;          // Dqk = 576, Dv = 512
  int64_t num_slots = 0;                        // cache slots (pages · 64)
  float scale = 0.0f;
  KvCacheFormat format = KvCacheFormat::kFp8Record;
  DType q_dtype = DType::kF32;                  // q (kF32) or q_bf16 (kBF16), the other null
  const float* q = nullptr;                     // [B, next_n, H, 576]
  const uint16_t* q_bf16 = nullptr;             // [B, next_n, H, 576] bf16 bits
  const void* cache = nullptr;                  // see format
  const int32_t* indices = nullptr;             // [B, next_n, K] physical slots
  const int32_t* topk_length = nullptr;         // [B·next_n], may be null
  float* out = nullptr;                         // [B, next_n, H, 512]
  float* lse = nullptr;                         // [B, H, next_n]
  // true: P = softmax(z) is rounded to bf16 before the value product (DeepSeek's reference inference
  // holds the probabilities in bf16); the CPU op only — the CUDA backend refuses it.
  bool bf16_probs = false;
};

namespace cpu {
void indexer_logits_paged(const PagedIndexerParams& p, float* logits /* [B·next_n, max_context_len] */);
void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                       int32_t* indices /* [B·next_n, K] in place */);
void sparse_attention_decode(const SparseDecodeParams& p);
}  // namespace cpu

// ═══════════════════════════════ 12. Model layers (CPU and CUDA) ══════════════════════════════
// The dense layers of the model (src/cpu/layers.cpp, src/cuda/layers*.cu; tests/op_layers.cpp). Rows
// are independent; N rows of C features, row-major. Every backward ACCUMULATES into parameter
// gradients (dw, db, dtable) and WRITES dx (unless stated). Matmuls run through BLAS (cblas_sgemm;
// fp32 cuBLAS on the GPU).
//   linear:        y[N,O] = x[N,I] · W[O,I]ᵀ            (HF [out, in] weight layout)
//     backward:    dx = dy · W (written, or added when accumulate_dx);  dW += dyᵀ · x
//   rmsnorm:       y = x · rstd · w,  rstd = (mean(x²) + eps)^-1/2          (rstd [N] saved)
//   layernorm:     y = (x − μ) · rstd · w + b, rstd = (var(x) + eps)^-1/2   (mean, rstd [N] saved)
//   swiglu:        a = silu(g) · u = g·σ(g)·u
//   embedding:     out[n] = table[tokens[n]]  (token in [0, V))
//   cross_entropy: loss[n] = logsumexp(logits[n]) − logits[n, target[n]]; target −1 → loss 0.
//     backward:    dlogits[n] = dloss · (softmax(logits[n]) − onehot(target)) (0 rows for −1)
namespace cpu {
void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O);
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N,
                     int I, int O, bool accumulate_dx);
void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps);
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                      float* dw, int64_t N, int C);
void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t N, int C, float eps);
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dw, float* db, int64_t N, int C);
void swiglu_forward(const float* g, const float* u, float* a, int64_t N);
void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N);
void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C);
void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C);
// Returns Σ_n loss[n] (fp64) and writes loss[n] when loss is non-null.
double cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V);
void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits,
                            int64_t N, int V);
}  // namespace cpu

}  // namespace dsa
