// numerics_ops.cpp — torch ops over quantisation, the cache records and the rotations (ops 1–2).
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>

#include "common.h"
#include "ops.h"

namespace dsa_torch {
namespace {
constexpr auto kF32 = at::kFloat;
dsa::ScaleFormat scale_format(bool ue8m0) { return ue8m0 ? dsa::ScaleFormat::kUe8m0 : dsa::ScaleFormat::kFloat; }
constexpr int kMlaRowDim = dsa::kMlaLatentDim + dsa::kMlaRopeDim;   // 576
}  // namespace

std::tuple<Tensor, Tensor> fp8_block_quantize(const Tensor& x, bool ue8m0) {
  const char* op = "dsa.fp8_block_quantize";
  check_tensor(x, op, "x", {kF32}, {-1, -1});
  TORCH_CHECK_VALUE(x.size(1) % dsa::kQuantBlock == 0, op, ": x.size(1) = ", x.size(1), " must be a multiple of 128");
  const c10::OptionalDeviceGuard guard(x.device());
  Tensor q = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  Tensor scales = at::empty({x.size(0), x.size(1) / dsa::kQuantBlock}, x.options());
  dsa::Fp8BlockQuantizeParams p;
  p.N = x.size(0);
  p.C = to_int(x.size(1), op, "x.size(1)");
  p.format = scale_format(ue8m0);
  p.x = cptr<float>(x);
  p.q = mptr<uint8_t>(q);
  p.scales = mptr<float>(scales);
  run([&] { backend_for(x).fp8_block_quantize(p); });
  return {q, scales};
}

Tensor mla_cache_pack(const Tensor& kv, bool ue8m0) {
  const char* op = "dsa.mla_cache_pack";
  check_tensor(kv, op, "kv", {kF32}, {-1, kMlaRowDim});
  const c10::OptionalDeviceGuard guard(kv.device());
  Tensor records = at::empty({kv.size(0), dsa::kMlaRecordBytes}, kv.options().dtype(at::kByte));
  dsa::MlaCacheParams p;
  p.N = kv.size(0);
  p.format = scale_format(ue8m0);
  p.kv = const_cast<float*>(cptr<float>(kv));   // pack reads kv (the struct serves both directions)
  p.records = mptr<uint8_t>(records);
  run([&] { backend_for(kv).mla_cache_pack(p); });
  return records;
}

Tensor indexer_cache_pack(const Tensor& k, bool ue8m0) {
  const char* op = "dsa.indexer_cache_pack";
  check_tensor(k, op, "k", {kF32}, {-1, dsa::kIndexerKeyDim});
  const int64_t pages = (k.size(0) + dsa::kCachePageTokens - 1) / dsa::kCachePageTokens;
  const c10::OptionalDeviceGuard guard(k.device());
  Tensor cache = at::empty({pages, dsa::kCachePageTokens, 1, dsa::kIndexerRecordBytes}, k.options().dtype(at::kByte));
  dsa::IndexerCacheParams p;
  p.N = k.size(0);
  p.format = scale_format(ue8m0);
  p.k = const_cast<float*>(cptr<float>(k));     // pack reads k
  p.cache = mptr<uint8_t>(cache);
  run([&] { backend_for(k).indexer_cache_pack(p); });
  return cache;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> indexer_quantize_fp8(const Tensor& q, const Tensor& k, const Tensor& w,
                                                                bool ue8m0) {
  const char* op = "dsa.indexer_quantize_fp8";
  check_tensor(q, op, "q", {kF32}, {-1, -1, -1});
  check_tensor(k, op, "k", {kF32}, {-1, q.size(2)}, &q);
  check_tensor(w, op, "w", {kF32}, {q.size(0), q.size(1)}, &q);
  dsa::IndexerQuantizeParams p;
  p.T = to_int(q.size(0), op, "q.size(0) (T)");
  p.HI = to_int(q.size(1), op, "q.size(1) (HI)");
  p.DI = to_int(q.size(2), op, "q.size(2) (DI)");
  p.S = to_int(k.size(0), op, "k.size(0) (S)");
  p.format = scale_format(ue8m0);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor q8 = at::empty(q.sizes(), q.options().dtype(at::kFloat8_e4m3fn));
  Tensor k8 = at::empty(k.sizes(), k.options().dtype(at::kFloat8_e4m3fn));
  Tensor k_scale = at::empty({p.S}, k.options());
  Tensor w_folded = at::empty(w.sizes(), w.options());
  p.q = cptr<float>(q);
  p.k = cptr<float>(k);
  p.w = cptr<float>(w);
  p.q_fp8 = mptr<uint8_t>(q8);
  p.k_fp8 = mptr<uint8_t>(k8);
  p.k_scale = mptr<float>(k_scale);
  p.w_folded = mptr<float>(w_folded);
  run([&] { backend_for(q).indexer_quantize_fp8(p); });
  return {q8, k8, k_scale, w_folded};
}

Tensor hadamard_transform(const Tensor& x) {
  const char* op = "dsa.hadamard_transform";
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must have at least one dimension");
  check_tensor(x, op, "x", {kF32}, std::vector<int64_t>(x.dim(), -1));
  const int64_t D = x.size(x.dim() - 1);
  const c10::OptionalDeviceGuard guard(x.device());
  Tensor y = x.clone();
  if (y.numel() == 0) return y;
  run([&] { backend_for(x).hadamard_transform(mptr<float>(y), y.numel() / D, to_int(D, op, "x.size(-1)")); });
  return y;
}

Tensor rope(const Tensor& x, const Tensor& pos, const Tensor& inv_freq, int64_t offset, bool interleaved, bool inverse) {
  const char* op = "dsa.rope";
  check_tensor(x, op, "x", {kF32}, {-1, -1, -1});
  check_tensor(pos, op, "pos", {at::kInt}, {x.size(0)}, &x);
  check_tensor(inv_freq, op, "inv_freq", {kF32}, {-1}, &x);
  dsa::RopeParams p;
  p.T = to_int(x.size(0), op, "x.size(0) (T)");
  p.H = to_int(x.size(1), op, "x.size(1) (H)");
  p.D = to_int(x.size(2), op, "x.size(2) (D)");
  p.offset = to_int(offset, op, "offset");
  p.R = to_int(2 * inv_freq.size(0), op, "2 * inv_freq.size(0) (R)");
  p.layout = interleaved ? dsa::RopeLayout::kInterleaved : dsa::RopeLayout::kRotateHalf;
  p.pos = cptr<int32_t>(pos);
  p.inv_freq = cptr<float>(inv_freq);
  const c10::OptionalDeviceGuard guard(x.device());
  Tensor y = x.clone();
  p.x = mptr<float>(y);
  run([&] {
    if (inverse)
      backend_for(x).rope_backward(p);
    else
      backend_for(x).rope_forward(p);
  });
  return y;
}

}  // namespace dsa_torch
