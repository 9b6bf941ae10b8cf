// variant_requests_test.cu — what the CUDA API promises beyond an op's numerics, which the test table
// (tests/ops_test.cpp: every variant class is a row there) cannot see through dsa::Backend:
//   * asking for a variant on a call it does not take (shape, dtype, alignment, architecture) is a
//     dsa::Error naming the op, the variant and the reason, thrown before anything is written, and
//     kAuto then picks by the dtype rule of cuda_ops.h (fp32 → kExact; bf16 / e4m3 → the fastest
//     tensor-core variant that runs);
//   * workspace queries and their named errors (too small, null), and results that do not depend on
//     the workspace a caller passes (kCublas chunks; indexer_topk's chunks);
//   * data the host cannot check without a sync (cuda_ops.h): an invalid page id inside a context;
//   * internal tuning configurations (not reachable through the public API): each equals the default;
//   * the device's e4m3 / bf16 conversions equal the CPU's bit for bit.
// Every test skips without a GPU; a variant the device cannot run is skipped with resolve_variant's reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attention_ref.h"
#include "cuda/common.cuh"
#include "cuda/device_buffer.h"
#include "cuda/indexer_logits_paged_mma.cuh"
#include "cuda/indexer_logits_paged_wgmma.cuh"
#include "cuda/indexer_logits_wgmma.cuh"
#include "dsa/cuda_ops.h"
#include "test_util.h"

namespace dsa::cuda {
// The tuning hook of src/cuda/topk.cu (not public API): runs top-k v2 configuration `config`, returns
// its name, or nullptr past the last one.
const char* topk_select_v2_config(const TopkParams& p, cudaStream_t stream, int config);
}  // namespace dsa::cuda

namespace dsa::test {
namespace {

using cuda::Variant;
constexpr int kDqk = kMlaLatentDim + kMlaRopeDim, kDv = kMlaLatentDim;
constexpr int kIdxHeads = 64;   // V3.2's indexer heads (the kWgmma indexer's HI)
constexpr float kScale = 0.13524f;
constexpr const char* kFwdOp = "sparse_attention_forward";
constexpr const char* kBwdOp = "sparse_attention_backward";

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

// resolve_variant's reason for not running v ("" when it runs).
template <class Params, class... Op>
std::string why_not(const Params& p, Variant v, Op... op) {
  try {
    cuda::resolve_variant(p, v, op...);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

int device_sm() {
  int dev = 0, major = 0, minor = 0;
  DSA_CUDA_TEST_CHECK(cudaGetDevice(&dev));
  DSA_CUDA_TEST_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  DSA_CUDA_TEST_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return 10 * major + minor;
}

// ── attention ─────────────────────────────────────────────────────────────────────────────────
// A sparse attention problem on device buffers (fp32 and bf16 copies of the same values).
struct AttnDevice {
  int T, S, H, K;
  std::vector<float> q, kv;
  std::vector<uint16_t> q16, kv16;
  std::vector<int32_t> idx;
  DeviceBuffer<float> dq, dkv;
  DeviceBuffer<uint16_t> dq16, dkv16;
  DeviceBuffer<int32_t> didx;
  AttnDevice(int T_, int S_, int H_, int K_, uint64_t seed)
      : T(T_), S(S_), H(H_), K(K_), q(Rng(seed).normal_vec(size_t(T_) * H_ * kDqk)),
        kv(Rng(seed + 1).normal_vec(size_t(S_) * kDqk)), q16(bf16_of(q)), kv16(bf16_of(kv)), idx(indices(seed)),
        dq(q.data(), q.size()), dkv(kv.data(), kv.size()), dq16(q16.data(), q16.size()),
        dkv16(kv16.data(), kv16.size()), didx(idx.data(), idx.size()) {}
  static std::vector<uint16_t> bf16_of(const std::vector<float>& x) {
    std::vector<uint16_t> b(x.size());
    for (size_t i = 0; i < x.size(); ++i) b[i] = cpu::bf16_from_float(x[i]);
    return b;
  }
  std::vector<int32_t> indices(uint64_t seed) const {
    Rng rng(seed + 2);
    std::vector<int32_t> v(size_t(T) * K);
    for (auto& i : v) i = rng.uniform(0.0f, 1.0f) < 0.1f ? kInvalidIndex : rng.integer(0, S - 1);
    return v;
  }
  AttentionParams fp32() const {
    AttentionParams p;
    p.T = T, p.S = S, p.H = H, p.Dqk = kDqk, p.Dv = kDv, p.scale = kScale;
    p.q = dq.data(), p.kv = dkv.data(), p.K = K, p.indices = didx.data();
    return p;
  }
  AttentionParams bf16() const {
    AttentionParams p = fp32();
    p.dtype = DType::kBF16;
    p.q = p.kv = nullptr;
    p.q_bf16 = dq16.data(), p.kv_bf16 = dkv16.data();
    return p;
  }
};

// The tensor-core forwards take H % 64 == 0 only: kWgmma / kMma at H = 32 is a named error from
// resolve_variant, the workspace query and the call (nothing written); kAuto runs kExact there.
TEST(VariantRequests, AttentionForwardRefusesUnsupportedShape) {
  SKIP_WITHOUT_GPU();
  const AttnDevice a(2, 100, 32, 70, 11);
  for (const Variant v : {Variant::kWgmma, Variant::kMma})
    for (const AttentionParams& p : {a.fp32(), a.bf16()}) {
      SCOPED_TRACE(std::string(cuda::variant_name(v)) + (p.dtype == DType::kBF16 ? ", bf16" : ", fp32"));
      const auto names = {kFwdOp, cuda::variant_name(v), "H a multiple of 64", "H = 32"};
      EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(p, v, kFwdOp); }, names));
      EXPECT_TRUE(throws_naming([&] { cuda::sparse_attention_forward_workspace_bytes(p, v); }, names));
      Guarded<float> out(size_t(a.T) * a.H * kDv), lse(size_t(a.T) * a.H);
      DeviceBuffer<float> dout(out.data(), out.size()), dlse(lse.data(), lse.size());
      DeviceScratch ws(size_t(a.S) * kDqk * 2);
      EXPECT_TRUE(throws_naming(
          [&] { cuda::sparse_attention_forward(p, {dout.data(), dlse.data(), nullptr}, ws.data(), ws.size(), nullptr, v); },
          names));
      sync_and_check(kFwdOp);
      dout.download(out.data(), "out");
      dlse.download(lse.data(), "lse");
      EXPECT_TRUE(out.untouched() && lse.untouched()) << "written despite the error";
      EXPECT_EQ(cuda::resolve_variant(p, Variant::kAuto, kFwdOp), Variant::kExact);
    }
}

// Workspace of the tensor-core forwards: the bf16 kv copy (S·Dqk·2 bytes) for fp32 inputs, nothing for
// bf16 ones; one byte short, or null, is a named error before anything is written.
TEST(VariantRequests, AttentionForwardWorkspace) {
  SKIP_WITHOUT_GPU();
  const AttnDevice a(1, 80, 64, 64, 12);
  std::string skipped;
  for (const Variant v : {Variant::kWgmma, Variant::kMma}) {
    SCOPED_TRACE(cuda::variant_name(v));
    const AttentionParams p = a.fp32();
    if (const std::string why = why_not(p, v, kFwdOp); !why.empty()) {
      skipped += why + "; ";
      continue;
    }
    const size_t need = cuda::sparse_attention_forward_workspace_bytes(p, v);
    EXPECT_EQ(need, size_t(a.S) * kDqk * 2) << "fp32 inputs: the bf16 kv copy";
    EXPECT_EQ(cuda::sparse_attention_forward_workspace_bytes(a.bf16(), v), 0u) << "bf16 inputs are read in place";
    Guarded<float> out(size_t(a.T) * a.H * kDv), lse(size_t(a.T) * a.H);
    DeviceBuffer<float> dout(out.data(), out.size()), dlse(lse.data(), lse.size());
    DeviceScratch ws(need);
    const AttentionForwardOut o{dout.data(), dlse.data(), nullptr};
    EXPECT_TRUE(throws_naming([&] { cuda::sparse_attention_forward(p, o, ws.data(), need - 1, nullptr, v); },
                              {kFwdOp, "workspace_bytes", cuda::variant_name(v)}));
    EXPECT_TRUE(throws_naming([&] { cuda::sparse_attention_forward(p, o, nullptr, need, nullptr, v); },
                              {kFwdOp, "workspace_bytes"}));
    sync_and_check(kFwdOp);
    dout.download(out.data(), "out");
    dlse.download(lse.data(), "lse");
    EXPECT_TRUE(out.untouched() && lse.untouched()) << "written despite the error";
  }
  if (!skipped.empty()) std::printf("[ skipped ] %s\n", skipped.c_str());
}

// kAuto by dtype at the V3.2 shape: bf16 forward → kWgmma on sm_90 (this binary carries sm_90a code),
// else kMma where it runs, else kExact; bf16 backward → kCublas (sm_80+); bf16-q decode → kMma where it
// runs; fp32 inputs → kExact everywhere. A kAuto call gives the bits of the variant it resolves to.
TEST(VariantRequests, AutoPicksTensorCoresForBf16AndExactForFp32) {
  SKIP_WITHOUT_GPU();
  const int sm = device_sm();
  const AttnDevice a(1, 64, 64, 64, 13);
  const AttentionParams p32 = a.fp32(), p16 = a.bf16();
  Variant want = Variant::kExact;
  if (sm == 90) want = Variant::kWgmma;
  else if (why_not(p16, Variant::kMma, kFwdOp).empty()) want = Variant::kMma;
  EXPECT_EQ(cuda::resolve_variant(p16, Variant::kAuto, kFwdOp), want) << "sm_" << sm;
  EXPECT_EQ(cuda::resolve_variant(p32, Variant::kAuto, kFwdOp), Variant::kExact);
  EXPECT_EQ(cuda::sparse_attention_forward_workspace_bytes(p32, Variant::kAuto), 0u) << "fp32 kAuto is kExact";
  auto run = [&](const AttentionParams& p, Variant v) {
    const size_t n_out = size_t(a.T) * a.H * kDv, n_row = size_t(a.T) * a.H;
    std::vector<float> out(n_out + n_row);
    DeviceBuffer<float> dout(out.data(), n_out), dlse(out.data() + n_out, n_row);
    const size_t need = cuda::sparse_attention_forward_workspace_bytes(p, v);
    DeviceScratch ws(need);
    cuda::sparse_attention_forward(p, {dout.data(), dlse.data(), nullptr}, ws.data(), need, nullptr, v);
    sync_and_check(kFwdOp);
    dout.download(out.data(), "out");
    dlse.download(out.data() + n_out, "lse");
    return out;
  };
  const std::vector<float> x = run(p16, Variant::kAuto), y = run(p16, want);
  EXPECT_TRUE(bitwise_equal(x.data(), y.data(), x.size())) << "kAuto (bf16) != " << cuda::variant_name(want);
  EXPECT_EQ(cuda::resolve_variant(p16, Variant::kAuto, kBwdOp), sm >= 80 ? Variant::kCublas : Variant::kExact);
  EXPECT_EQ(cuda::resolve_variant(p32, Variant::kAuto, kBwdOp), Variant::kExact);
  SparseDecodeParams d32;
  d32.B = 1, d32.H = 64, d32.K = 64, d32.num_slots = 64, d32.scale = kScale, d32.format = KvCacheFormat::kBf16;
  d32.q = a.dq.data(), d32.cache = a.dkv16.data(), d32.indices = a.didx.data();   // not read by resolve_variant
  SparseDecodeParams d16 = d32;
  d16.q = nullptr, d16.q_dtype = DType::kBF16, d16.q_bf16 = a.dq16.data();
  const Variant want_decode = why_not(d16, Variant::kMma).empty() ? Variant::kMma : Variant::kExact;
  if (sm == 90) EXPECT_EQ(want_decode, Variant::kMma) << why_not(d16, Variant::kMma);
  EXPECT_EQ(cuda::resolve_variant(d16, Variant::kAuto), want_decode);
  EXPECT_EQ(cuda::resolve_variant(d32, Variant::kAuto), Variant::kExact);
}

// kCublas backward: the workspace errors (null, below a one-query chunk) and argument errors name the
// op and the argument, nothing written; T = 0 zeroes dkv; a workspace one byte short of the default
// runs chunks of T − 1 queries and stays within the table's bf16 bound of the float64 reference.
TEST(VariantRequests, CublasBackwardWorkspaceAndChunks) {
  SKIP_WITHOUT_GPU();
  constexpr double kBf16BwdRelL2 = 3e-2;   // tests/op_attention.cpp derives it
  constexpr int T = 5, S = 70, H = 8, Dqk = 40, Dv = 24, K = 33;
  Rng rng(1234);
  const std::vector<float> q = rng.normal_vec(size_t(T) * H * Dqk), kv = rng.normal_vec(size_t(S) * Dqk),
                           dout = rng.normal_vec(size_t(T) * H * Dv);
  std::vector<int32_t> idx(size_t(T) * K);
  for (auto& v : idx) v = rng.uniform(0.0f, 1.0f) < 0.1f ? kInvalidIndex : rng.integer(0, S - 1);
  std::fill(idx.begin() + K, idx.begin() + 2 * K, kInvalidIndex);   // row 1: no valid slot
  KeySets sets(T);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < K; ++j)
      if (idx[size_t(t) * K + j] != kInvalidIndex) sets[t].push_back(idx[size_t(t) * K + j]);
  const float scale = static_cast<float>(1.0 / std::sqrt(double(Dqk)));
  const RefForward f = ref_attention_forward(to_f64(q), to_f64(kv), sets, H, Dqk, Dv, scale);
  const RefBackward ref = ref_attention_backward(to_f64(q), to_f64(kv), to_f64(dout), sets, S, H, Dqk, Dv, scale);
  const std::vector<float> out(f.out.begin(), f.out.end()), lse(f.lse.begin(), f.lse.end());
  DeviceBuffer<float> dq_in(q.data(), q.size()), dkv_in(kv.data(), kv.size()), ddout(dout.data(), dout.size()),
      dfo(out.data(), out.size()), dlse(lse.data(), lse.size());
  DeviceBuffer<int32_t> didx(idx.data(), idx.size());
  AttentionParams p;
  p.T = T, p.S = S, p.H = H, p.Dqk = Dqk, p.Dv = Dv, p.scale = scale;
  p.q = dq_in.data(), p.kv = dkv_in.data(), p.K = K, p.indices = didx.data();
  if (const std::string why = why_not(p, Variant::kCublas, kBwdOp); !why.empty()) GTEST_SKIP() << why;
  const size_t full = cuda::sparse_attention_backward_workspace_bytes(p, Variant::kCublas);
  ASSERT_GT(full, 0u);
  DeviceScratch ws(full);
  Guarded<float> dq(ref.dq.size()), dkv(ref.dkv.size());
  DeviceBuffer<float> ddq(dq.data(), dq.size()), ddkv(dkv.data(), dkv.size());
  const AttentionBackwardArgs args{ddout.data(), dfo.data(), dlse.data(), ddq.data(), ddkv.data()};
  auto bwd = [&](const AttentionParams& pp, const AttentionBackwardArgs& b, void* w, size_t bytes) {
    cuda::sparse_attention_backward(pp, b, w, bytes, nullptr, Variant::kCublas);
  };
  EXPECT_TRUE(throws_naming([&] { bwd(p, args, nullptr, full); }, {kBwdOp, "workspace_bytes"}));
  EXPECT_TRUE(throws_naming([&] { bwd(p, args, ws.data(), 1024); }, {kBwdOp, "workspace_bytes"}));
  AttentionBackwardArgs b = args;
  b.dout = nullptr;
  EXPECT_TRUE(throws_naming([&] { bwd(p, b, ws.data(), full); }, {kBwdOp, "dout"}));
  AttentionParams bad = p;
  bad.K = 0;
  EXPECT_TRUE(throws_naming([&] { bwd(bad, args, ws.data(), full); }, {kBwdOp, "K"}));
  EXPECT_THROW(cuda::sparse_attention_backward_workspace_bytes(bad, Variant::kCublas), Error);
  sync_and_check(kBwdOp);
  ddq.download(dq.data(), "dq");
  ddkv.download(dkv.data(), "dkv");
  EXPECT_TRUE(dq.untouched() && dkv.untouched()) << "written on error";
  // Chunks of T − 1 queries (one byte short of the default chunk's workspace).
  bwd(p, args, ws.data(), full - 1);
  sync_and_check(kBwdOp);
  ddq.download(dq.data(), "dq");
  ddkv.download(dkv.data(), "dkv");
  const Diff e_dq = compare(dq.data(), ref.dq.data(), ref.dq.size()), e_dkv = compare(dkv.data(), ref.dkv.data(), ref.dkv.size());
  EXPECT_FALSE(e_dq.special_mismatch || e_dkv.special_mismatch);
  EXPECT_LE(std::sqrt(e_dq.nmse), kBf16BwdRelL2) << "dq relative L2 error, chunked";
  EXPECT_LE(std::sqrt(e_dkv.nmse), kBf16BwdRelL2) << "dkv relative L2 error, chunked";
  // T = 0: an empty selection; dkv is zeroed, no workspace needed.
  AttentionParams empty = p;
  empty.T = 0;
  EXPECT_EQ(cuda::sparse_attention_backward_workspace_bytes(empty, Variant::kCublas), 0u);
  Guarded<float> dkv0(size_t(S) * Dqk, 7.0f);
  DeviceBuffer<float> ddkv0(dkv0.data(), dkv0.size());
  bwd(empty, {ddout.data(), dfo.data(), dlse.data(), ddq.data(), ddkv0.data()}, nullptr, 0);
  sync_and_check(kBwdOp);
  ddkv0.download(dkv0.data(), "dkv");
  for (size_t i = 0; i < dkv0.size(); ++i) ASSERT_EQ(dkv0[i], 0.0f) << i;
}

// ── indexer ───────────────────────────────────────────────────────────────────────────────────
IndexerParams indexer_probe(int HI = kIdxHeads, Precision precision = Precision::kFp8) {
  static uint8_t dummy alignas(16)[16];   // resolve_variant reads no data: host pointers suffice
  IndexerParams p;
  p.HI = HI, p.DI = kIndexerKeyDim, p.precision = precision, p.q = dummy, p.k = dummy;
  return p;
}

// Normal q, k, w quantised as production does (cpu::indexer_quantize_fp8, ue8m0), causal rows; q
// starts q_offset bytes into its buffer.
struct IndexerHost {
  std::vector<uint8_t> q, k;
  std::vector<float> w, ksc;
  std::vector<int32_t> ks, ke;
  IndexerHost(int T, int S, uint64_t seed, int q_offset) : ks(size_t(T), 0), ke(size_t(T)) {
    Rng rng(seed);
    const std::vector<float> qf = rng.normal_vec(size_t(T) * kIdxHeads * kIndexerKeyDim),
                             kf = rng.normal_vec(size_t(S) * kIndexerKeyDim), wf = rng.normal_vec(size_t(T) * kIdxHeads);
    q.assign(qf.size() + q_offset, 0), k.resize(kf.size()), w.resize(wf.size()), ksc.resize(size_t(S));
    cpu::indexer_quantize_fp8({T, S, kIdxHeads, kIndexerKeyDim, ScaleFormat::kUe8m0, qf.data(), kf.data(), wf.data(),
                               q.data() + q_offset, k.data(), ksc.data(), w.data()});
    for (int t = 0; t < T; ++t) ke[size_t(t)] = S - T + t + 1;
  }
};

// Device copies of IndexerHost and the IndexerParams over them.
struct IndexerDevice : IndexerHost {
  DeviceBuffer<uint8_t> dq, dk;
  DeviceBuffer<float> dw, dksc;
  DeviceBuffer<int32_t> dks, dke;
  IndexerParams p;
  IndexerDevice(int T, int S, uint64_t seed, int q_offset = 0)
      : IndexerHost(T, S, seed, q_offset), dq(q.data(), q.size()), dk(k.data(), k.size()), dw(w.data(), w.size()),
        dksc(ksc.data(), ksc.size()), dks(ks.data(), ks.size()), dke(ke.data(), ke.size()) {
    p.T = T, p.S = S, p.HI = kIdxHeads, p.DI = kIndexerKeyDim, p.precision = Precision::kFp8;
    p.q = dq.data() + q_offset, p.k = dk.data(), p.k_scale = dksc.data(), p.w = dw.data();
    p.ks = dks.data(), p.ke = dke.data();
  }
};

// kWgmma takes kFp8, HI = 64, DI = 128, 16-byte aligned q / k on sm_90; kMma kFp8, HI a multiple of
// 16 up to 128 on sm_89+. Asked for on other inputs each is a named error (indexer_logits and
// indexer_topk alike, before anything is written); kAuto then runs the next variant that runs.
TEST(VariantRequests, IndexerRefusesUnsupportedInputs) {
  SKIP_WITHOUT_GPU();
  const IndexerParams heads32 = indexer_probe(32), fp32 = indexer_probe(kIdxHeads, Precision::kFp32);
  for (const char* op : {"indexer_logits", "indexer_topk"}) {
    SCOPED_TRACE(op);
    EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(heads32, Variant::kWgmma, op); }, {op, "wgmma", "HI = 64", "HI = 32"}));
    EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(fp32, Variant::kWgmma, op); }, {op, "wgmma", "kFp8"}));
    EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(fp32, Variant::kMma, op); }, {op, "mma", "kFp8"}));
    EXPECT_EQ(cuda::resolve_variant(fp32, Variant::kAuto, op), Variant::kExact);
    const Variant fallback = why_not(heads32, Variant::kMma, op).empty() ? Variant::kMma : Variant::kExact;
    EXPECT_EQ(cuda::resolve_variant(heads32, Variant::kAuto, op), fallback);
  }
  // q at byte 1 of its device copy: refused before writing; kAuto does not pick kWgmma.
  const IndexerDevice in(2, 70, 6, /*q_offset=*/1);
  const int K = 8;
  std::vector<float> out(size_t(in.p.T) * in.p.S, 3.0f), back(out.size());
  std::vector<int32_t> idx(size_t(in.p.T) * K, 7), idx_back(idx.size());
  DeviceBuffer<float> dout(out.data(), out.size());
  DeviceBuffer<int32_t> didx(idx.data(), idx.size());
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_logits(in.p, dout.data(), nullptr, Variant::kWgmma); },
                            {"indexer_logits", "wgmma", "16-byte aligned"}));
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_topk(in.p, K, didx.data(), nullptr, 0, nullptr, Variant::kWgmma); },
                            {"indexer_topk", "wgmma", "16-byte aligned"}));
  EXPECT_NE(cuda::resolve_variant(in.p, Variant::kAuto), Variant::kWgmma);
  IndexerParams null_q = in.p;
  null_q.q = nullptr;
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_logits(null_q, dout.data(), nullptr, Variant::kWgmma); },
                            {"indexer_logits", "q is null"}));
  sync_and_check("indexer_logits (refused)");
  dout.download(back.data(), "logits");
  didx.download(idx_back.data(), "indices");
  EXPECT_EQ(back, out) << "logits written before the throw";
  EXPECT_EQ(idx_back, idx) << "indices written before the throw";
}

// indexer_topk of the tensor-core variants holds ⌊128 MiB / (4·S)⌋ rows of logits at a time (the query
// asks for that much); a null or short workspace is a named error; a larger workspace runs larger
// chunks with the same indices, bit for bit (T = 300, S = 131071: two chunks vs one).
TEST(VariantRequests, IndexerTopkWorkspaceAndChunks) {
  SKIP_WITHOUT_GPU();
  constexpr int T = 300, S = 131071, K = 2048;
  constexpr size_t kChunkRows = 256;   // ⌊128 MiB / (4·131071)⌋
  IndexerParams probe = indexer_probe();
  probe.T = T, probe.S = S;
  for (const Variant v : {Variant::kWgmma, Variant::kMma}) {
    SCOPED_TRACE(cuda::variant_name(v));
    if (const std::string why = why_not(probe, v, "indexer_topk"); !why.empty()) {
      std::printf("[ skipped ] %s\n", why.c_str());
      continue;
    }
    EXPECT_EQ(cuda::indexer_topk_workspace_bytes(probe, K, v), kChunkRows * S * sizeof(float));
  }
  if (!why_not(probe, Variant::kWgmma, "indexer_topk").empty()) GTEST_SKIP() << "kWgmma does not run here";
  const IndexerDevice in(T, S, 1301);
  auto fused = [&](size_t ws_bytes) {
    std::vector<int32_t> idx(size_t(T) * K, sentinel_value<int32_t>());
    DeviceBuffer<int32_t> di(idx.data(), idx.size());
    DeviceScratch ws(ws_bytes);
    cuda::indexer_topk(in.p, K, di.data(), ws.data(), ws_bytes, nullptr, Variant::kWgmma);
    sync_and_check("indexer_topk");
    di.download(idx.data(), "indices");
    return idx;
  };
  const size_t need = cuda::indexer_topk_workspace_bytes(in.p, K, Variant::kWgmma);
  const std::vector<int32_t> two = fused(need), one = fused(need + (size_t(64) << 20));
  EXPECT_TRUE(bitwise_equal(two.data(), one.data(), two.size())) << "the chunk size changed the selection";
  std::vector<int32_t> idx(size_t(T) * K, 7), back(idx.size());
  DeviceBuffer<int32_t> di(idx.data(), idx.size());
  DeviceScratch ws(need);
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_topk(in.p, K, di.data(), nullptr, need, nullptr, Variant::kWgmma); },
                            {"indexer_topk", "workspace_bytes"}));
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_topk(in.p, K, di.data(), ws.data(), need - 1, nullptr, Variant::kWgmma); },
                            {"indexer_topk", "workspace_bytes"}));
  sync_and_check("indexer_topk (bad workspace)");
  di.download(back.data(), "indices");
  EXPECT_EQ(back, idx) << "indices written before the throw";
}

// ── paged indexer ─────────────────────────────────────────────────────────────────────────────
PagedIndexerParams paged_probe(int HI = kIdxHeads, int next_n = 2) {
  static uint8_t dummy alignas(16)[16];
  PagedIndexerParams p;
  p.B = 1, p.next_n = next_n, p.HI = HI, p.q_fp8 = dummy, p.cache = dummy;
  return p;
}

// kWgmma takes HI = 64 on sm_90, kMma HI a multiple of 16 with next_n·HI ≤ 128 on sm_89+, both
// next_n 1 or 2 and 16-byte aligned q_fp8 / cache; other requests are named errors, and kAuto keeps
// kExact until kPagedTensorCoreDefault.
TEST(VariantRequests, PagedIndexerRefusesUnsupportedInputs) {
  SKIP_WITHOUT_GPU();
  constexpr const char* op = "indexer_logits_paged";
  const bool wgmma_here = cuda::detail::use_paged_logits_wgmma(paged_probe());
  const bool mma_here = cuda::detail::use_paged_logits_mma(paged_probe());
  const bool tc_default = cuda::kPagedTensorCoreDefault;
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(32), Variant::kWgmma); }, {op, "wgmma", "HI = 64", "HI = 32"}));
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(24), Variant::kMma); }, {op, "mma", "multiple of 16", "HI = 24"}));
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(128), Variant::kMma); }, {op, "mma", "next_n·HI", "HI = 128"}));
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(), Variant::kCublas); }, {op, "no variant", "cublas"}));
  EXPECT_EQ(cuda::resolve_variant(paged_probe(24), Variant::kAuto), Variant::kExact);
  EXPECT_EQ(cuda::resolve_variant(paged_probe(128, 1), Variant::kAuto), tc_default && mma_here ? Variant::kMma : Variant::kExact);
  if (!wgmma_here) EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(), Variant::kWgmma); }, {op, "wgmma", "sm_90"}));
  if (!mma_here) EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(), Variant::kMma); }, {op, "mma", "sm_89"}));
  EXPECT_EQ(cuda::resolve_variant(paged_probe(), Variant::kAuto),
            !tc_default ? Variant::kExact : wgmma_here ? Variant::kWgmma : mma_here ? Variant::kMma : Variant::kExact);
  PagedIndexerParams misaligned = paged_probe();
  misaligned.cache = static_cast<const uint8_t*>(misaligned.cache) + 1;
  for (const Variant v : {Variant::kWgmma, Variant::kMma})
    if (v == Variant::kWgmma ? wgmma_here : mma_here)
      EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(misaligned, v); }, {op, cuda::variant_name(v), "16-byte aligned"}));
  EXPECT_EQ(cuda::resolve_variant(misaligned, Variant::kAuto), Variant::kExact);
}

// Data the CPU refuses and the device cannot check without a sync (cuda_ops.h §11): a page id outside
// [0, num_pages) inside a context gives −inf for its 64 keys, in every variant, and changes no other
// logit (bitwise equal to the same call with those entries pointing at valid pages); block-table
// entries past a request's pages are never read (garbage there).
TEST(VariantRequests, PagedIndexerInvalidPageIds) {
  SKIP_WITHOUT_GPU();
  constexpr int kPage = kCachePageTokens, next_n = 2;
  constexpr size_t kPageBytes = size_t(kPage) * kIndexerRecordBytes, kScaleOffset = size_t(kPage) * kIndexerKeyDim;
  const std::vector<int> lens = {700, 450, 90};
  const int B = int(lens.size()), rows = B * next_n, max_blocks = 14, num_pages = 30, max_ctx = 764;
  Rng rng(44);
  std::vector<int32_t> table(size_t(B) * max_blocks);
  for (auto& t : table) t = rng.integer(-1000000, 1000000);   // garbage past each request's pages
  std::vector<int32_t> pool(num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng.engine());
  size_t next = 0;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < (lens[b] + kPage - 1) / kPage; ++i) table[size_t(b) * max_blocks + i] = pool[next++];
  std::vector<uint8_t> cache(size_t(num_pages) * kPageBytes);
  for (size_t pg = 0; pg < size_t(num_pages); ++pg)
    for (int j = 0; j < kPage; ++j) {
      for (int d = 0; d < kIndexerKeyDim; ++d)
        cache[pg * kPageBytes + size_t(j) * kIndexerKeyDim + d] = kExactDotCodes[rng.integer(0, 6)];
      const float s = rng.uniform(0.25f, 2.0f);
      std::memcpy(&cache[pg * kPageBytes + kScaleOffset + size_t(j) * 4], &s, 4);
    }
  std::vector<uint8_t> q(size_t(rows) * kIdxHeads * kIndexerKeyDim);
  for (auto& v : q) v = kExactDotCodes[rng.integer(0, 6)];
  const std::vector<float> w = rng.normal_vec(size_t(rows) * kIdxHeads);
  std::vector<int32_t> ctx(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) ctx[size_t(r)] = lens[size_t(r / next_n)] - next_n + r % next_n + 1;
  const std::pair<int, int> bad_pages[] = {{0, 3}, {1, 0}, {2, 1}};   // (request, logical page)
  std::vector<int32_t> bad_table = table;
  for (auto [b, i] : bad_pages) bad_table[size_t(b) * max_blocks + i] = (i % 2) ? num_pages + 7 : -3;
  DeviceBuffer<uint8_t> dq(q.data(), q.size()), dcache(cache.data(), cache.size());
  DeviceBuffer<float> dw(w.data(), w.size());
  DeviceBuffer<int32_t> dctx(ctx.data(), ctx.size()), dgood(table.data(), table.size()),
      dbad(bad_table.data(), bad_table.size());
  PagedIndexerParams p;
  p.B = B, p.next_n = next_n, p.HI = kIdxHeads, p.num_pages = num_pages, p.max_blocks = max_blocks;
  p.max_context_len = max_ctx, p.q_fp8 = dq.data(), p.cache = dcache.data(), p.w = dw.data();
  p.context_lens = dctx.data();
  for (const Variant v : {Variant::kExact, Variant::kMma, Variant::kWgmma}) {
    SCOPED_TRACE(cuda::variant_name(v));
    if (const std::string why = why_not(p, v); !why.empty()) {
      std::printf("[ skipped ] %s\n", why.c_str());
      continue;
    }
    auto run = [&](const int32_t* tbl) {
      std::vector<float> out(size_t(rows) * max_ctx, std::numeric_limits<float>::quiet_NaN());
      DeviceBuffer<float> dout(out.data(), out.size());
      PagedIndexerParams pp = p;
      pp.block_table = tbl;
      cuda::indexer_logits_paged(pp, dout.data(), nullptr, v);
      sync_and_check("indexer_logits_paged");
      dout.download(out.data(), "logits");
      return out;
    };
    const std::vector<float> good = run(dgood.data()), bad = run(dbad.data());
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < max_ctx; ++j) {
        const size_t i = size_t(r) * max_ctx + j;
        bool in_bad_page = false;
        for (auto [b, pg] : bad_pages) in_bad_page |= b == r / next_n && pg == j / kPage;
        if (j < ctx[size_t(r)] && in_bad_page) {
          ASSERT_TRUE(std::isinf(bad[i]) && bad[i] < 0) << "row " << r << " key " << j << " = " << bad[i];
        } else {
          ASSERT_TRUE(bitwise_equal(&bad[i], &good[i], 1)) << "row " << r << " key " << j;
          ASSERT_FALSE(std::isnan(good[i])) << "row " << r << " key " << j << " unwritten";
        }
      }
  }
}

// ── internal tuning configurations ──────────────────────────────────────────────────────────────
// Every tuning configuration of the kWgmma indexer logits has the default's per-element arithmetic;
// on exact dots (kExactDotCodes) nothing is left to the accumulation order, so the bits must match.
TEST(VariantRequests, IndexerWgmmaConfigsEqualTheDefault) {
  SKIP_WITHOUT_GPU();
  if (!cuda::detail::use_logits_wgmma(indexer_probe())) GTEST_SKIP() << "kWgmma does not run here";
  constexpr int T = 7, S = 5000;
  Rng rng(900);
  std::vector<uint8_t> q(size_t(T) * kIdxHeads * kIndexerKeyDim), k(size_t(S) * kIndexerKeyDim);
  for (auto& v : q) v = kExactDotCodes[rng.integer(0, 6)];
  for (auto& v : k) v = kExactDotCodes[rng.integer(0, 6)];
  const std::vector<float> w = rng.normal_vec(size_t(T) * kIdxHeads), ksc = rng.uniform_vec(S, 0.25f, 2.0f);
  const std::vector<int32_t> ks = {0, 0, 0, 2000, 2000, 2000, 2000}, ke = {1000, 1250, 1500, 2700, 3400, 4100, 5000};
  DeviceBuffer<uint8_t> dq(q.data(), q.size()), dk(k.data(), k.size());
  DeviceBuffer<float> dw(w.data(), w.size()), dksc(ksc.data(), ksc.size());
  DeviceBuffer<int32_t> dks(ks.data(), T), dke(ke.data(), T);
  const IndexerParams p{T, S, kIdxHeads, kIndexerKeyDim, Precision::kFp8, dq.data(), dk.data(), dksc.data(), dw.data(),
                        dks.data(), dke.data()};
  auto run = [&](int config) {
    std::vector<float> out(size_t(T) * S, std::numeric_limits<float>::quiet_NaN());
    DeviceBuffer<float> dout(out.data(), out.size());
    if (config < 0) cuda::indexer_logits(p, dout.data(), nullptr, Variant::kWgmma);
    else EXPECT_NE(cuda::detail::run_logits_wgmma_config(p, dout.data(), nullptr, config), nullptr);
    sync_and_check("indexer_logits");
    dout.download(out.data(), "logits");
    return out;
  };
  const std::vector<float> dflt = run(-1);
  for (int cfg = 1;; ++cfg) {
    IndexerParams none;
    if (cuda::detail::run_logits_wgmma_config(none, nullptr, nullptr, cfg) == nullptr) break;   // T = 0: no launch
    const std::vector<float> other = run(cfg);
    EXPECT_TRUE(bitwise_equal(dflt.data(), other.data(), dflt.size())) << "config " << cfg;
  }
}

// top-k v2's sampled path (K ≤ 2048, rows ≥ 4096 keys) in every tuning configuration = the CPU: unique
// values, ascending / descending rows (the sample sees a trend), a row of two values (ties swamp the
// threshold: the fallback), misaligned row starts and lengths 4095 / 4096 / 4099 around the path's
// minimum, at K = 2048, 777 and 1.
TEST(VariantRequests, TopkConfigsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int T = 8, S = 70001;
  Rng rng(504);
  std::vector<float> logits(size_t(T) * S);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < S; ++s) {
      float& x = logits[size_t(t) * S + s];
      x = t == 1 ? float(s) * 1e-3f : t == 2 ? -float(s) : t == 3 ? float(rng.integer(0, 1)) : rng.normal();
    }
  const std::vector<int32_t> ks = {0, 3, 1, 0, 5, 1, S - 4096, 100};
  const std::vector<int32_t> ke = {S, S, S - 2, S, 5 + 4096, 1 + 4095, S, 100 + 4099};
  DeviceBuffer<float> dl(logits.data(), logits.size());
  DeviceBuffer<int32_t> dks(ks.data(), T), dke(ke.data(), T);
  for (int K : {2048, 777, 1}) {
    std::vector<int32_t> want(size_t(T) * K);
    cpu::topk_select(TopkParams{T, S, K, logits.data(), ks.data(), ke.data(), want.data()});
    for (int config = 0;; ++config) {
      std::vector<int32_t> got(size_t(T) * K, 12345);
      DeviceBuffer<int32_t> idx(got.data(), got.size());
      const char* name = cuda::topk_select_v2_config({T, S, K, dl.data(), dks.data(), dke.data(), idx.data()}, nullptr, config);
      if (name == nullptr) break;
      sync_and_check("topk_select");
      idx.download(got.data(), "indices");
      ASSERT_EQ(got, want) << "config " << name << ", K = " << K;
    }
  }
}

// ── device conversions ────────────────────────────────────────────────────────────────────────
// The device's e4m3 / bf16 encoders equal the CPU's bit for bit over every 61st fp32 bit pattern (~70 M
// values, all exponents and specials), and the e4m3 decoder over all 256 codes.
constexpr uint32_t kSweepStride = 61;   // prime stride: every exponent / mantissa region is visited
constexpr uint64_t kPatterns = 1ull << 32;

__global__ void encode_sweep(uint64_t count, uint8_t* fp8, uint16_t* bf16) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < count; i += uint64_t(gridDim.x) * blockDim.x) {
    const float x = cuda::detail::bits_float(static_cast<uint32_t>(i * kSweepStride));
    fp8[i] = cuda::detail::fp8_e4m3_encode(x);
    bf16[i] = cuda::detail::bf16_encode(x);
  }
}
__global__ void decode_all(float* out) { out[threadIdx.x] = cuda::detail::fp8_e4m3_decode(static_cast<uint8_t>(threadIdx.x)); }

TEST(VariantRequests, DeviceConversionsMatchCpuBitwise) {
  SKIP_WITHOUT_GPU();
  const uint64_t count = kPatterns / kSweepStride;
  DeviceScratch d8(count), d16(count * 2), dd(256 * sizeof(float));
  encode_sweep<<<1024, 256>>>(count, static_cast<uint8_t*>(d8.data()), static_cast<uint16_t*>(d16.data()));
  decode_all<<<1, 256>>>(static_cast<float*>(dd.data()));
  sync_and_check("conversion sweep");
  std::vector<uint8_t> h8(count);
  std::vector<uint16_t> h16(count);
  std::vector<float> hd(256);
  DSA_CUDA_TEST_CHECK(cudaMemcpy(h8.data(), d8.data(), count, cudaMemcpyDeviceToHost));
  DSA_CUDA_TEST_CHECK(cudaMemcpy(h16.data(), d16.data(), count * 2, cudaMemcpyDeviceToHost));
  DSA_CUDA_TEST_CHECK(cudaMemcpy(hd.data(), dd.data(), 256 * sizeof(float), cudaMemcpyDeviceToHost));
  uint64_t bad8 = 0, bad16 = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t u = static_cast<uint32_t>(i * kSweepStride);
    float x;
    std::memcpy(&x, &u, 4);
    bad8 += h8[i] != cpu::fp8_e4m3_from_float(x);
    bad16 += h16[i] != cpu::bf16_from_float(x);
  }
  EXPECT_EQ(bad8, 0u) << "fp8 encodings differing from the CPU";
  EXPECT_EQ(bad16, 0u) << "bf16 encodings differing from the CPU";
  for (int c = 0; c < 256; ++c) {
    const float want = cpu::fp8_e4m3_to_float(static_cast<uint8_t>(c));
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(hd[c])) << "code " << c;
    else EXPECT_TRUE(bitwise_equal(&hd[c], &want, 1)) << "code " << c;
  }
}

}  // namespace
}  // namespace dsa::test
