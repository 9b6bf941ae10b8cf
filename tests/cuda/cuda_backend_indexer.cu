// cuda_backend_indexer.cu — the numerics / rotations / indexer / top-k / paged side of the GPU test
// rows: CudaBackend methods for ops 1–5, 10 and the paged indexer. Each copies the host inputs to the
// device (DeviceBuffer: device-side guard regions; outputs are uploaded with their poison so an
// unwritten element comes back as poison), runs dsa::cuda::<op> with this backend's variant
// on the default stream, synchronises, downloads the outputs and checks the device guards.
//
// Argument errors: the device ops check what the host can see; the data checks of the CPU (ranges,
// indices, context lengths, page ids) need the data, which here is on the host, so each method first
// runs the same checks on the host copy (the CPU's own validators: common/op_checks.h,
// cpu/indexer_common.h), and the table's bad-input cases throw the same dsa::Error before anything
// is uploaded or written.
// Shapes are clamped at 0 when sizing the device copies, so a negative dimension reaches the op
// (which names it) instead of a huge allocation.
#include <cuda_runtime.h>

#include <algorithm>

#include "common/check.h"
#include "common/op_checks.h"
#include "common/topk_policy.h"
#include "cpu/indexer_common.h"
#include "cuda/cuda_backend.h"
#include "cuda/device_buffer.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {
namespace {

size_t n0(long long v) { return v > 0 ? static_cast<size_t>(v) : 0; }
size_t sz(long long a, long long b = 1, long long c = 1) { return n0(a) * n0(b) * n0(c); }

size_t elem_bytes(Precision p) {
  switch (p) {
    case Precision::kFp32: return 4;
    case Precision::kBf16: return 2;
    case Precision::kFp8: return 1;
  }
  return 4;
}

// Device copies of an IndexerParams' inputs (q, k as raw bytes of their precision).
struct DeviceIndexer {
  DeviceBuffer<uint8_t> q, k;
  DeviceBuffer<float> k_scale, w;
  DeviceBuffer<int32_t> ks, ke;
  IndexerParams d;
  explicit DeviceIndexer(const IndexerParams& p)
      : q(static_cast<const uint8_t*>(p.q), sz(p.T, p.HI, p.DI) * elem_bytes(p.precision)),
        k(static_cast<const uint8_t*>(p.k), sz(p.S, p.DI) * elem_bytes(p.precision)),
        k_scale(p.k_scale, sz(p.S)),
        w(p.w, sz(p.T, p.HI)),
        ks(p.ks, sz(p.T)),
        ke(p.ke, sz(p.T)),
        d(p) {
    d.q = q.data();
    d.k = k.data();
    d.k_scale = k_scale.data();
    d.w = w.data();
    d.ks = ks.data();
    d.ke = ke.data();
  }
};

}  // namespace

// ── 1. numerics and cache records ─────────────────────────────────────────────────────────────
void CudaBackend::fp8_block_quantize(const Fp8BlockQuantizeParams& p) {
  DeviceBuffer<float> x(p.x, sz(p.N, p.C)), s(p.scales, sz(p.N, p.C / kQuantBlock));
  DeviceBuffer<uint8_t> q(p.q, sz(p.N, p.C));
  Fp8BlockQuantizeParams d = p;
  d.x = x.data();
  d.q = q.data();
  d.scales = s.data();
  cuda::fp8_block_quantize(d, nullptr);
  sync_and_check("fp8_block_quantize");
  q.download(p.q, "q");
  s.download(p.scales, "scales");
}

void CudaBackend::fp8_block_dequantize(const Fp8BlockDequantizeParams& p) {
  DeviceBuffer<float> x(p.x, sz(p.N, p.C)), s(p.scales, sz(p.N, p.C / kQuantBlock));
  DeviceBuffer<uint8_t> q(p.q, sz(p.N, p.C));
  Fp8BlockDequantizeParams d = p;
  d.x = x.data();
  d.q = q.data();
  d.scales = s.data();
  cuda::fp8_block_dequantize(d, nullptr);
  sync_and_check("fp8_block_dequantize");
  x.download(p.x, "x");
}

void CudaBackend::mla_cache_pack(const MlaCacheParams& p) {
  DeviceBuffer<float> kv(p.kv, sz(p.N, kMlaLatentDim + kMlaRopeDim));
  DeviceBuffer<uint8_t> rec(p.records, sz(p.N, kMlaRecordBytes));
  MlaCacheParams d = p;
  d.kv = kv.data();
  d.records = rec.data();
  dev().mla_cache_pack(d);
  sync_and_check("mla_cache_pack");
  rec.download(p.records, "records");
}

void CudaBackend::mla_cache_unpack(const MlaCacheParams& p) {
  DeviceBuffer<float> kv(p.kv, sz(p.N, kMlaLatentDim + kMlaRopeDim));
  DeviceBuffer<uint8_t> rec(p.records, sz(p.N, kMlaRecordBytes));
  MlaCacheParams d = p;
  d.kv = kv.data();
  d.records = rec.data();
  dev().mla_cache_unpack(d);
  sync_and_check("mla_cache_unpack");
  kv.download(p.kv, "kv");
}

namespace {
size_t indexer_cache_bytes(int64_t N) {
  return sz((N + kCachePageTokens - 1) / kCachePageTokens, kCachePageTokens, kIndexerRecordBytes);
}
}  // namespace

void CudaBackend::indexer_cache_pack(const IndexerCacheParams& p) {
  DeviceBuffer<float> k(p.k, sz(p.N, kIndexerKeyDim));
  DeviceBuffer<uint8_t> cache(p.cache, indexer_cache_bytes(p.N));
  IndexerCacheParams d = p;
  d.k = k.data();
  d.cache = cache.data();
  dev().indexer_cache_pack(d);
  sync_and_check("indexer_cache_pack");
  cache.download(p.cache, "cache");
}

void CudaBackend::indexer_cache_unpack(const IndexerCacheParams& p) {
  DeviceBuffer<float> k(p.k, sz(p.N, kIndexerKeyDim)), k_scale(p.k_scale, sz(p.N));
  DeviceBuffer<uint8_t> cache(p.cache, indexer_cache_bytes(p.N)), k_fp8(p.k_fp8, sz(p.N, kIndexerKeyDim));
  IndexerCacheParams d = p;
  d.k = k.data();
  d.cache = cache.data();
  d.k_fp8 = k_fp8.data();
  d.k_scale = k_scale.data();
  dev().indexer_cache_unpack(d);
  sync_and_check("indexer_cache_unpack");
  k.download(p.k, "k");
  k_fp8.download(p.k_fp8, "k_fp8");
  k_scale.download(p.k_scale, "k_scale");
}

// ── 2. rotations ──────────────────────────────────────────────────────────────────────────────
void CudaBackend::hadamard_transform(float* x, int64_t N, int D) {
  DeviceBuffer<float> dx(x, sz(N, D));
  dev().hadamard_transform(dx.data(), N, D);
  sync_and_check("hadamard_transform");
  dx.download(x, "x");
}

namespace {
void rope(dsa::Backend& dev, const RopeParams& p, bool forward) {
  const char* op = forward ? "rope_forward" : "rope_backward";
  // pos[t] ≥ 0 is a data check (the CPU makes it); here the data is on the host.
  ::dsa::detail::require_non_negative(p.T, op, "T");
  if (p.pos)
    for (int t = 0; t < p.T; ++t)
      if (p.pos[t] < 0 && p.x && p.inv_freq && p.D > 0 && p.R > 0 && p.R % 2 == 0 && p.offset >= 0 &&
          p.offset + p.R <= p.D && p.H >= 0)
        ::dsa::detail::fail(op, "pos[", t, "] = ", p.pos[t], " must be >= 0");
  DeviceBuffer<int32_t> pos(p.pos, sz(p.T));
  DeviceBuffer<float> inv(p.inv_freq, sz(p.R / 2)), x(p.x, sz(p.T, p.H, p.D));
  RopeParams d = p;
  d.pos = pos.data();
  d.inv_freq = inv.data();
  d.x = x.data();
  if (forward) dev.rope_forward(d);
  else dev.rope_backward(d);
  sync_and_check(op);
  x.download(p.x, "x");
}
}  // namespace

void CudaBackend::rope_forward(const RopeParams& p) { rope(dev(), p, true); }
void CudaBackend::rope_backward(const RopeParams& p) { rope(dev(), p, false); }

// ── 3–5, 10. indexer and top-k ───────────────────────────────────────────────────────────────
void CudaBackend::indexer_quantize_fp8(const IndexerQuantizeParams& p) {
  DeviceBuffer<float> q(p.q, sz(p.T, p.HI, p.DI)), k(p.k, sz(p.S, p.DI)), w(p.w, sz(p.T, p.HI));
  DeviceBuffer<uint8_t> q8(p.q_fp8, sz(p.T, p.HI, p.DI)), k8(p.k_fp8, sz(p.S, p.DI));
  DeviceBuffer<float> ksc(p.k_scale, sz(p.S)), wf(p.w_folded, sz(p.T, p.HI));
  IndexerQuantizeParams d = p;
  d.q = q.data();
  d.k = k.data();
  d.w = w.data();
  d.q_fp8 = q8.data();
  d.k_fp8 = k8.data();
  d.k_scale = ksc.data();
  d.w_folded = wf.data();
  cuda::indexer_quantize_fp8(d, nullptr);
  sync_and_check("indexer_quantize_fp8");
  q8.download(p.q_fp8, "q_fp8");
  k8.download(p.k_fp8, "k_fp8");
  ksc.download(p.k_scale, "k_scale");
  wf.download(p.w_folded, "w_folded");
}

void CudaBackend::indexer_logits(const IndexerParams& p, float* logits) {
  constexpr const char* op = "indexer_logits";
  cpu::detail::validate_indexer_params(p, op);
  ::dsa::detail::require_ptr(logits, op, "logits");
  DeviceIndexer in(p);
  DeviceBuffer<float> out(logits, sz(p.T, p.S));
  dev_for(in.d, op).indexer_logits(in.d, out.data());
  sync_and_check(op);
  out.download(logits, "logits");
}

void CudaBackend::topk_select(const TopkParams& p) {
  constexpr const char* op = "topk_select";
  ::dsa::detail::require_non_negative(p.T, op, "T");
  ::dsa::detail::require_non_negative(p.S, op, "S");
  cpu::detail::require_topk_budget(p.K, op);
  ::dsa::detail::require_ptr(p.logits, op, "logits");
  ::dsa::detail::require_ptr(p.indices, op, "indices");
  ::dsa::detail::validate_topk_policy(p.policy, p.K, op);
  ::dsa::detail::require_ranges(p.ks, p.ke, p.T, p.S, op);
  DeviceBuffer<float> logits(p.logits, sz(p.T, p.S));
  DeviceBuffer<int32_t> ks(p.ks, sz(p.T)), ke(p.ke, sz(p.T)), idx(p.indices, sz(p.T, p.K));
  DeviceBuffer<int32_t> len(p.topk_length, p.topk_length != nullptr ? sz(p.T) : 0);
  TopkParams d = p;
  d.logits = logits.data();
  d.ks = ks.data();
  d.ke = ke.data();
  d.indices = idx.data();
  d.topk_length = p.topk_length != nullptr ? len.data() : nullptr;
  dev().topk_select(d);
  sync_and_check(op);
  idx.download(p.indices, "indices");
  if (p.topk_length != nullptr) len.download(p.topk_length, "topk_length");
}

void CudaBackend::indexer_topk(const IndexerParams& p, int K, int32_t* indices) {
  constexpr const char* op = "indexer_topk";
  cpu::detail::validate_indexer_params(p, op);
  cpu::detail::require_topk_budget(K, op);
  ::dsa::detail::require_ptr(indices, op, "indices");
  DeviceIndexer in(p);
  DeviceBuffer<int32_t> idx(indices, sz(p.T, K));
  dev_for(in.d, op).indexer_topk(in.d, K, idx.data());
  sync_and_check(op);
  idx.download(indices, "indices");
}

void CudaBackend::indexer_backward(const IndexerBackwardParams& p) {
  constexpr const char* op = "indexer_backward";
  cpu::detail::validate_indexer_backward_inputs(p, op);  // the CPU's checks, on the host copy
  DeviceIndexer in(p.fwd);
  DeviceBuffer<int32_t> idx(p.indices, sz(p.fwd.T, p.K));
  DeviceBuffer<float> dI(p.d_logits, p.K > 0 ? sz(p.fwd.T, p.K) : sz(p.fwd.T, p.fwd.S));
  DeviceBuffer<float> dq(p.dq, sz(p.fwd.T, p.fwd.HI, p.fwd.DI)), dk(p.dk, sz(p.fwd.S, p.fwd.DI)),
      dw(p.dw, sz(p.fwd.T, p.fwd.HI));
  IndexerBackwardParams d = p;
  d.fwd = in.d;
  d.indices = idx.data();
  d.d_logits = dI.data();
  d.dq = dq.data();
  d.dk = dk.data();
  d.dw = dw.data();
  dev().indexer_backward(d);
  sync_and_check(op);
  dq.download(p.dq, "dq");
  dk.download(p.dk, "dk");
  dw.download(p.dw, "dw");
}

// ── 11. paged indexer ─────────────────────────────────────────────────────────────────────────
void CudaBackend::indexer_logits_paged(const PagedIndexerParams& p, float* logits) {
  constexpr const char* op = "indexer_logits_paged";
  ::dsa::detail::validate_paged_indexer_args(p, logits);
  ::dsa::detail::validate_paged_indexer_data(p);  // host copy: the device op cannot read it
  const size_t rows = sz(p.B, p.next_n);
  DeviceBuffer<uint8_t> q(p.q_fp8, rows * sz(p.HI, kIndexerKeyDim));
  DeviceBuffer<uint8_t> cache(p.cache, sz(p.num_pages, kCachePageTokens, kIndexerRecordBytes));
  DeviceBuffer<float> w(p.w, rows * sz(p.HI)), out(logits, rows * sz(p.max_context_len));
  DeviceBuffer<int32_t> lens(p.context_lens, rows), table(p.block_table, sz(p.B, p.max_blocks));
  PagedIndexerParams d = p;
  d.q_fp8 = q.data();
  d.cache = cache.data();
  d.w = w.data();
  d.context_lens = lens.data();
  d.block_table = table.data();
  dev_for(d).indexer_logits_paged(d, out.data());
  sync_and_check(op);
  out.download(logits, "logits");
}

void CudaBackend::paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                    int num_pages, int32_t* indices) {
  ::dsa::detail::validate_paged_to_physical_args(B, next_n, K, block_table, max_blocks, num_pages, indices);
  ::dsa::detail::validate_paged_to_physical_data(B, next_n, K, block_table, max_blocks, num_pages, indices);
  DeviceBuffer<int32_t> table(block_table, sz(B, max_blocks)), idx(indices, sz(B, next_n, K));
  dev().paged_to_physical(B, next_n, K, table.data(), max_blocks, num_pages, idx.data());
  sync_and_check("paged_to_physical");
  idx.download(indices, "indices");
}

}  // namespace dsa::test
