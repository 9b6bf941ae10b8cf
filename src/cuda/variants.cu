// variants.cu — the kernel variants of the CUDA ops (cuda_ops.h "Kernel variants"): which variants an
// op has, why one cannot run for a call, and the one kAuto picks. The ops' dispatchers call
// resolve_variant once per call and run exactly what it returns.
#include <cuda_runtime.h>

#include <string>

#include "common/check.h"
#include "cuda/attention_common.cuh"
#include "cuda/common.cuh"
#include "cuda/indexer_logits_mma.cuh"
#include "cuda/indexer_logits_paged_mma.cuh"
#include "cuda/indexer_logits_paged_wgmma.cuh"
#include "cuda/indexer_logits_wgmma.cuh"
#include "cuda/sparse_attention_forward_wgmma.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr Variant kIndexerVariants[] = {Variant::kWgmma, Variant::kMma, Variant::kExact};
constexpr Variant kForwardVariants[] = {Variant::kWgmma, Variant::kMma, Variant::kExact};
constexpr Variant kBackwardVariants[] = {Variant::kCublas, Variant::kExact};
constexpr Variant kDecodeVariants[] = {Variant::kMma, Variant::kExact};
constexpr Variant kPagedIndexerVariants[] = {Variant::kWgmma, Variant::kMma, Variant::kExact};
constexpr int kIndexerTensorCoreDI = kIndexerKeyDim;   // DI of every e4m3 tensor-core indexer variant
constexpr int kWgmmaIndexerHeads = 64;                 // HI of the wgmma indexer (V3.2)
constexpr int kMmaHeadTile = 16, kMmaMaxHeads = 128;   // HI of the mma indexer: multiples of 16 up to 128
constexpr int kAttentionHeadTile = 64;                 // H of the tensor-core attention variants: multiples of 64
constexpr size_t kAlign = 16;                          // 16-byte vector loads / cp.async of the Hopper kernels

#define DSA_VARIANT_LIST(list) list, static_cast<int>(sizeof(list) / sizeof(list[0]))
const OpVariants kOps[] = {
    {"indexer_logits", DSA_VARIANT_LIST(kIndexerVariants)},
    {"indexer_topk", DSA_VARIANT_LIST(kIndexerVariants)},
    {"sparse_attention_forward", DSA_VARIANT_LIST(kForwardVariants)},
    {"sparse_attention_backward", DSA_VARIANT_LIST(kBackwardVariants)},
    {"sparse_attention_decode", DSA_VARIANT_LIST(kDecodeVariants)},
    {"indexer_logits_paged", DSA_VARIANT_LIST(kPagedIndexerVariants)},
};
#undef DSA_VARIANT_LIST

const OpVariants& find_op(const char* op) {
  for (const OpVariants& o : kOps)
    if (std::string(o.op) == op) return o;
  ::dsa::detail::fail(op, "has no kernel variants");
}

std::string device_sm() { return "this device is sm_" + std::to_string(detail::device_sm_version()); }

bool misaligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlign != 0; }

// Why `v` cannot run the indexer call p ("" when it can).
std::string indexer_why_not(const IndexerParams& p, Variant v) {
  if (v == Variant::kExact) return "";
  if (p.precision != Precision::kFp8) return "it takes e4m3 q and k (precision kFp8)";
  if (p.DI != kIndexerTensorCoreDI) return "it needs DI = 128 (DI = " + std::to_string(p.DI) + ")";
  if (v == Variant::kMma) {
    if (p.HI % kMmaHeadTile != 0 || p.HI > kMmaMaxHeads)
      return "it needs HI a multiple of 16 up to 128 (HI = " + std::to_string(p.HI) + ")";
    if (!detail::use_logits_mma(p)) return "it needs an sm_89+ device running sm_89+ code of this binary (" + device_sm() + ")";
    return "";
  }
  if (p.HI != kWgmmaIndexerHeads) return "it needs HI = 64 (HI = " + std::to_string(p.HI) + ")";
  if (misaligned(p.q) || misaligned(p.k)) return "it needs q and k 16-byte aligned";
  if (!detail::use_logits_wgmma(p)) return "it needs an sm_90 device running the sm_90a code of this binary (" + device_sm() + ")";
  return "";
}

bool v32_attention_shape(const AttentionParams& p) {
  return p.Dqk == kMlaLatentDim + kMlaRopeDim && p.Dv == kMlaLatentDim && p.H > 0 && p.H % kAttentionHeadTile == 0;
}

std::string attention_why_not(const AttentionParams& p, Variant v, const char* op) {
  if (v == Variant::kExact) return "";
  const std::string op_s = op;
  if (op_s == "sparse_attention_backward") {
    if (v == Variant::kCublas && !attn::sparse_backward_bf16_fits(p)) return "it needs an sm_80+ device (" + device_sm() + ")";
    return "";
  }
  // sparse_attention_forward
  if (!v32_attention_shape(p))
    return "it needs Dqk = 576, Dv = 512 and H a multiple of 64 (Dqk = " + std::to_string(p.Dqk) +
           ", Dv = " + std::to_string(p.Dv) + ", H = " + std::to_string(p.H) + ")";
  if (v == Variant::kMma) {
    if (!attn::sparse_forward_pipelined_fits(p)) return "it needs 156 KiB of shared memory per block (" + device_sm() + ")";
    return "";
  }
  const void* q = p.dtype == DType::kBF16 ? static_cast<const void*>(p.q_bf16) : p.q;
  const void* kv = p.dtype == DType::kBF16 ? static_cast<const void*>(p.kv_bf16) : p.kv;
  if (misaligned(q) || misaligned(kv)) return "it needs q and kv 16-byte aligned";
  if (!attn::sparse_forward_wgmma_applies(p))
    return "it needs an sm_90 device running the sm_90a code of this binary (" + device_sm() + ")";
  return "";
}

std::string decode_why_not(const SparseDecodeParams& p, Variant v) {
  if (v == Variant::kExact) return "";
  if (p.H % kAttentionHeadTile != 0) return "it needs H a multiple of 64 (H = " + std::to_string(p.H) + ")";
  if (!attn::sparse_decode_bf16_fits(p)) return "it needs 156 KiB of shared memory per block (" + device_sm() + ")";
  return "";
}

std::string paged_indexer_why_not(const PagedIndexerParams& p, Variant v) {
  if (v == Variant::kExact) return "";
  if (p.next_n != 1 && p.next_n != 2) return "it needs next_n = 1 or 2 (next_n = " + std::to_string(p.next_n) + ")";
  if (v == Variant::kMma) {
    if (p.HI <= 0 || p.HI % kMmaHeadTile != 0 || int64_t(p.next_n) * p.HI > kMmaMaxHeads)
      return "it needs HI a multiple of 16 with next_n·HI up to 128 (HI = " + std::to_string(p.HI) +
             ", next_n = " + std::to_string(p.next_n) + ")";
    if (misaligned(p.q_fp8) || misaligned(p.cache)) return "it needs q_fp8 and cache 16-byte aligned";
    if (!detail::use_paged_logits_mma(p))
      return "it needs an sm_89+ device running sm_89+ code of this binary (" + device_sm() + ")";
    return "";
  }
  if (p.HI != kWgmmaIndexerHeads) return "it needs HI = 64 (HI = " + std::to_string(p.HI) + ")";
  if (misaligned(p.q_fp8) || misaligned(p.cache)) return "it needs q_fp8 and cache 16-byte aligned";
  if (!detail::use_paged_logits_wgmma(p))
    return "it needs an sm_90 device running the sm_90a code of this binary (" + device_sm() + ")";
  return "";
}

// The shared rule: a named variant runs or throws; kAuto takes the first eligible variant that runs.
template <class WhyNot>
Variant resolve(const char* op, Variant requested, bool tensor_core_inputs, WhyNot why_not) {
  const OpVariants& o = find_op(op);
  if (requested == Variant::kAuto) {
    for (int i = 0; i < o.count; ++i) {
      const Variant v = o.variants[i];
      if (v != Variant::kExact && !tensor_core_inputs) continue;   // fp32 inputs stay on the exact path
      if (why_not(v).empty()) return v;
    }
    return Variant::kExact;
  }
  bool listed = false;
  std::string names;
  for (int i = 0; i < o.count; ++i) {
    listed = listed || o.variants[i] == requested;
    names += std::string(names.empty() ? "" : ", ") + variant_name(o.variants[i]);
  }
  if (!listed) ::dsa::detail::fail(op, "has no variant '", variant_name(requested), "' (its variants: ", names, ")");
  const std::string why = why_not(requested);
  if (!why.empty()) ::dsa::detail::fail(op, "variant '", variant_name(requested), "' cannot run this call: ", why);
  return requested;
}

}  // namespace

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kAuto: return "auto";
    case Variant::kExact: return "exact";
    case Variant::kMma: return "mma";
    case Variant::kWgmma: return "wgmma";
    case Variant::kCublas: return "cublas";
  }
  return "?";
}

Variant parse_variant(const std::string& name) {
  for (Variant v : {Variant::kAuto, Variant::kExact, Variant::kMma, Variant::kWgmma, Variant::kCublas})
    if (name == variant_name(v)) return v;
  ::dsa::detail::fail("variant", "'", name, "' is not auto, exact, mma, wgmma or cublas");
}

const OpVariants* op_variants(int* n_ops) {
  *n_ops = static_cast<int>(sizeof(kOps) / sizeof(kOps[0]));
  return kOps;
}

bool op_has_variant(const char* op, Variant v) {
  for (const OpVariants& o : kOps) {
    if (std::string(o.op) != op) continue;
    for (int i = 0; i < o.count; ++i)
      if (o.variants[i] == v) return true;
  }
  return false;
}

Variant resolve_variant(const IndexerParams& p, Variant requested, const char* op) {
  return resolve(op, requested, p.precision == Precision::kFp8, [&](Variant v) { return indexer_why_not(p, v); });
}

Variant resolve_variant(const AttentionParams& p, Variant requested, const char* op) {
  return resolve(op, requested, p.dtype == DType::kBF16, [&](Variant v) { return attention_why_not(p, v, op); });
}

Variant resolve_variant(const SparseDecodeParams& p, Variant requested) {
  return resolve("sparse_attention_decode", requested, p.q_dtype == DType::kBF16,
                 [&](Variant v) { return decode_why_not(p, v); });
}

Variant resolve_variant(const PagedIndexerParams& p, Variant requested) {
  // The inputs are e4m3 by contract: kAuto may take a tensor-core variant once they are the default.
  return resolve("indexer_logits_paged", requested, /*tensor_core_inputs=*/kPagedTensorCoreDefault,
                 [&](Variant v) { return paged_indexer_why_not(p, v); });
}

}  // namespace dsa::cuda

namespace dsa::cuda {

std::string device_description() {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ")";
}

}  // namespace dsa::cuda
