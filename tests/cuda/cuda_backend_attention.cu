// cuda_backend_attention.cu — the attention side of the GPU test rows: CudaBackend methods for ops
// 6–9 and the sparse decode. Each copies the host inputs to the device (DeviceBuffer, with device-
// side guard regions), runs dsa::cuda::<op> with this backend's variant on the default
// stream, synchronises, and copies the outputs back (checking the device guards). A tensor-core
// class runs its variant where the call takes it (dev_for) and kExact otherwise; the ops without
// variants (dense attention, the KL) run kExact in every class.
//
// Argument errors: the GPU ops check what the host can see (shapes, null pointers) themselves; the
// data checks the CPU makes (indices in [0, S), ks ≤ ke, topk_length ≤ K) need the data, which the
// device ops only see on the device (they treat such indices as invalid and such ranges as empty,
// cuda_ops.h). Here the data are on the host, so each method first runs the CPU validator on the
// host copy: the table's bad-input cases then throw the same dsa::Error before anything is
// uploaded or written, exactly as a caller holding host-side metadata would do.
#include <cuda_runtime.h>

#include "cpu/attention_common.h"
#include "cpu/attention_dtype.h"
#include "cuda/cuda_backend.h"
#include "cuda/device_buffer.h"
#include "common/check.h"
#include "common/op_checks.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {
namespace {

using cpu::attn::Selection;

size_t sz(long long a, long long b = 1, long long c = 1) { return static_cast<size_t>(a) * b * c; }

// Device copies of an AttentionParams' inputs; params() returns the struct with device pointers.
struct DeviceAttention {
  DeviceBuffer<float> q, kv;
  DeviceBuffer<uint16_t> q_bf16, kv_bf16;
  DeviceBuffer<int32_t> indices, topk_length, ks, ke;
  AttentionParams d;
  explicit DeviceAttention(const AttentionParams& p)
      : q(p.q, p.q ? sz(p.T, p.H, p.Dqk) : 0),
        kv(p.kv, p.kv ? sz(p.S, p.Dqk) : 0),
        q_bf16(p.q_bf16, p.q_bf16 ? sz(p.T, p.H, p.Dqk) : 0),
        kv_bf16(p.kv_bf16, p.kv_bf16 ? sz(p.S, p.Dqk) : 0),
        indices(p.indices, sz(p.T, p.K)),
        topk_length(p.topk_length, sz(p.T)),
        ks(p.ks, sz(p.T)),
        ke(p.ke, sz(p.T)),
        d(p) {
    d.q = p.q ? q.data() : nullptr;
    d.kv = p.kv ? kv.data() : nullptr;
    d.q_bf16 = p.q_bf16 ? q_bf16.data() : nullptr;
    d.kv_bf16 = p.kv_bf16 ? kv_bf16.data() : nullptr;
    d.indices = indices.data();
    d.topk_length = topk_length.data();
    d.ks = ks.data();
    d.ke = ke.data();
  }
};

template <typename Op>
void forward(const AttentionParams& p, const AttentionForwardOut& o, Selection sel, const char* name, Op op) {
  cpu::attn::Fp32Inputs host;
  cpu::attn::validate_params(host.fp32(p, name), sel, name);
  cpu::attn::validate_forward_out(o, name);
  DeviceAttention in(p);
  DeviceBuffer<float> out(o.out, sz(p.T, p.H, p.Dv)), lse(o.lse, sz(p.T, p.H)), ml(o.max_logits, sz(p.T, p.H));
  op(in.d, AttentionForwardOut{out.data(), lse.data(), ml.data()});
  sync_and_check(name);
  out.download(o.out, "out");
  lse.download(o.lse, "lse");
  ml.download(o.max_logits, "max_logits");
}

template <typename Op>
void backward(const AttentionParams& p, const AttentionBackwardArgs& b, Selection sel, const char* name, Op op) {
  cpu::attn::Fp32Inputs host;
  cpu::attn::validate_params(host.fp32(p, name), sel, name);
  cpu::attn::validate_backward_args(b, name);
  DeviceAttention in(p);
  DeviceBuffer<float> dout(b.dout, sz(p.T, p.H, p.Dv)), out(b.out, sz(p.T, p.H, p.Dv)), lse(b.lse, sz(p.T, p.H));
  DeviceBuffer<float> dq(b.dq, sz(p.T, p.H, p.Dqk)), dkv(b.dkv, sz(p.S, p.Dqk));
  op(in.d, AttentionBackwardArgs{dout.data(), out.data(), lse.data(), dq.data(), dkv.data()});
  sync_and_check(name);
  dq.download(b.dq, "dq");
  dkv.download(b.dkv, "dkv");
}

}  // namespace

void CudaBackend::sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) {
  forward(p, o, Selection::kSparse, "sparse_attention_forward", [&](const AttentionParams& d, const AttentionForwardOut& od) {
    dev_for(d, "sparse_attention_forward").sparse_attention_forward(d, od);
  });
}

void CudaBackend::dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) {
  forward(p, o, Selection::kDense, "dense_attention_forward", [&](const AttentionParams& d, const AttentionForwardOut& od) {
    exact().dense_attention_forward(d, od);
  });
}

void CudaBackend::sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) {
  backward(
      p, b, Selection::kSparse, "sparse_attention_backward",
      [&](const AttentionParams& d, const AttentionBackwardArgs& bd) {
        dev_for(d, "sparse_attention_backward").sparse_attention_backward(d, bd);
      });
}

void CudaBackend::dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) {
  backward(
      p, b, Selection::kDense, "dense_attention_backward",
      [&](const AttentionParams& d, const AttentionBackwardArgs& bd) { exact().dense_attention_backward(d, bd); });
}

namespace {
struct DeviceKl {
  DeviceAttention attn;
  DeviceBuffer<float> lse, logits;
  IndexerKlParams d;
  size_t logits_n;
  explicit DeviceKl(const IndexerKlParams& p)
      : attn(p.attn),
        lse(p.lse, sz(p.attn.T, p.attn.H)),
        logits(p.index_logits, p.attn.indices ? sz(p.attn.T, p.attn.K) : sz(p.attn.T, p.attn.S)),
        d(p),
        logits_n(p.attn.indices ? sz(p.attn.T, p.attn.K) : sz(p.attn.T, p.attn.S)) {
    d.attn = attn.d;
    d.lse = lse.data();
    d.index_logits = logits.data();
  }
};

void validate_kl(const IndexerKlParams& p, const char* op) {
  cpu::attn::validate_params(p.attn, p.attn.indices ? Selection::kSparse : Selection::kDense, op, /*check_dv=*/false);
  detail::require_ptr(p.lse, op, "lse");
  detail::require_ptr(p.index_logits, op, "index_logits");
}
}  // namespace

void CudaBackend::indexer_kl_forward(const IndexerKlParams& p, float* loss) {
  constexpr const char* op = "indexer_kl_forward";
  validate_kl(p, op);
  detail::require_ptr(loss, op, "loss");
  DeviceKl in(p);
  DeviceBuffer<float> l(loss, sz(p.attn.T));
  exact().indexer_kl_forward(in.d, l.data());
  sync_and_check(op);
  l.download(loss, "loss");
}

void CudaBackend::indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits) {
  constexpr const char* op = "indexer_kl_backward";
  validate_kl(p, op);
  detail::require_ptr(d_index_logits, op, "d_index_logits");
  DeviceKl in(p);
  DeviceBuffer<float> dl(dloss, sz(p.attn.T)), g(d_index_logits, in.logits_n);
  exact().indexer_kl_backward(in.d, dl.data(), g.data());
  sync_and_check(op);
  g.download(d_index_logits, "d_index_logits");
}

void CudaBackend::sparse_attention_decode(const SparseDecodeParams& p) {
  constexpr const char* op = "sparse_attention_decode";
  constexpr int kRowDim = kMlaLatentDim + kMlaRopeDim;
  // Host-visible checks first (the op repeats them on device pointers), then the data checks the
  // CPU makes, on the host copy (common/op_checks.h, shared with the CPU op).
  ::dsa::detail::validate_sparse_decode_args(p);
  ::dsa::detail::validate_sparse_decode_data(p);
  const int64_t rows = static_cast<int64_t>(p.B) * p.next_n;
  size_t cache_bytes = static_cast<size_t>(p.num_slots);
  switch (p.format) {
    case KvCacheFormat::kFp32: cache_bytes *= kRowDim * sizeof(float); break;
    case KvCacheFormat::kBf16: cache_bytes *= kRowDim * sizeof(uint16_t); break;
    default: cache_bytes *= kMlaRecordBytes; break;
  }
  DeviceBuffer<float> q(p.q, sz(rows, p.H, kRowDim));
  DeviceBuffer<uint16_t> q_bf16(p.q_bf16, sz(rows, p.H, kRowDim));
  DeviceBuffer<uint8_t> cache(static_cast<const uint8_t*>(p.cache), cache_bytes);
  DeviceBuffer<int32_t> idx(p.indices, sz(rows, p.K)), len(p.topk_length, sz(rows));
  DeviceBuffer<float> out(p.out, sz(rows, p.H, kMlaLatentDim)), lse(p.lse, sz(rows, p.H));
  SparseDecodeParams d = p;
  d.q = q.data();
  d.q_bf16 = q_bf16.data();
  d.cache = cache.data();
  d.indices = idx.data();
  d.topk_length = len.data();
  d.out = out.data();
  d.lse = lse.data();
  dev_for(d).sparse_attention_decode(d);
  sync_and_check(op);
  out.download(p.out, "out");
  lse.download(p.lse, "lse");
}

}  // namespace dsa::test
