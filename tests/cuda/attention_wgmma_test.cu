// attention_wgmma_test.cu — sparse_attention_forward version 5 (kSparseAttentionWgmmaVersion: Hopper
// bf16 wgmma, sm_90a), which is not a row of the fp32 test table: its operands are rounded to bf16,
// so it is checked here against a float64 reference with the bf16 tolerance of the v3 / v4 test
// (attention_bf16_test.cu), on the shapes it takes (Dqk 576, Dv 512, H ∈ {64, 128}) with the
// corner cases of its 64-key tiles: K a multiple of the tile, ±1 around it, a long row (the 3-slot
// key-id ring wraps), S < K (duplicates), T = 1, K = 1, −1 and ≥ S indices, topk_length (0, short,
// K, > K clamped), an all-invalid row; guards, poisoned outputs fully written, bitwise reruns, the workspace
// query and its named error. Skips without a GPU, and where v5 does not run (not an sm_90 device or
// no sm_90a code in this binary: sparse_attention_forward_wgmma_available); the fallback of a
// version-5 call on a shape v5 does not take (H = 32 → v1) is checked on any GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "dsa/cuda_ops.h"
#include "test_util.h"

namespace dsa::test {
namespace {

constexpr int kDqk = kMlaLatentDim + kMlaRopeDim, kDv = kMlaLatentDim;
// Tolerances: the same derivation as attention_bf16_test.cu (bf16 q, kv and P, fp32 accumulation):
// q and kv carry a relative rounding error of 2^-9, so a score z = scale·q·k (|z| up to ~10 here)
// is off by up to ~|z|·2^-8 ≈ 0.04 → lse and max_logits within 5e-2 absolute; out averages the
// per-key errors (P rounded to bf16 too): relative L2 error ≤ 2e-2. wgmma changes only the fp32
// accumulation order inside the MMA, not the operand rounding, so v3's bound holds unchanged.
constexpr double kLseAtol = 5e-2, kOutRelL2 = 2e-2;
// Tolerance of the H = 32 fallback case: it runs v1 (fp32 CUDA cores), the table's fp32 accuracy;
// 1e-4 is far above v1's observed ~1e-6 and far below a wrong kernel's O(1).
constexpr double kFallbackAtol = 1e-4;
constexpr float kScale = 0.13524f;

struct Case {
  const char* name;
  int T, S, H, K;
  double invalid_frac;
  bool empty_row, lengths;
};

// float64 reference of op 6 (ops.h §6): softmax over the valid slots, natural-log lse.
void reference(const std::vector<float>& q, const std::vector<float>& kv, const std::vector<int32_t>& idx,
               const std::vector<int32_t>& len, const Case& c, std::vector<double>& out, std::vector<double>& lse,
               std::vector<double>& mx) {
  out.assign(static_cast<size_t>(c.T) * c.H * kDv, 0.0);
  lse.assign(static_cast<size_t>(c.T) * c.H, INFINITY);
  mx.assign(static_cast<size_t>(c.T) * c.H, -INFINITY);
  for (int t = 0; t < c.T; ++t) {
    const int n = len.empty() ? c.K : std::clamp(len[t], 0, c.K);   // the GPU clamps topk_length to [0, K]
    for (int h = 0; h < c.H; ++h) {
      std::vector<double> z;
      std::vector<int> keys;
      const float* qr = &q[(static_cast<size_t>(t) * c.H + h) * kDqk];
      for (int j = 0; j < n; ++j) {
        const int s = idx[static_cast<size_t>(t) * c.K + j];
        if (s < 0 || s >= c.S) continue;
        double acc = 0;
        for (int d = 0; d < kDqk; ++d) acc += static_cast<double>(qr[d]) * kv[static_cast<size_t>(s) * kDqk + d];
        z.push_back(kScale * acc);
        keys.push_back(s);
      }
      if (z.empty()) continue;
      const double m = *std::max_element(z.begin(), z.end());
      double l = 0;
      for (double v : z) l += std::exp(v - m);
      const size_t row = static_cast<size_t>(t) * c.H + h;
      lse[row] = m + std::log(l);
      mx[row] = m;
      for (size_t i = 0; i < z.size(); ++i) {
        const double p = std::exp(z[i] - lse[row]);
        for (int d = 0; d < kDv; ++d) out[row * kDv + d] += p * kv[static_cast<size_t>(keys[i]) * kDqk + d];
      }
    }
  }
}

struct Inputs {
  std::vector<float> q, kv;
  std::vector<int32_t> idx, len;
};

Inputs make_inputs(const Case& c) {
  Inputs in;
  Rng rng(1700 + c.T * 31 + c.K * 7 + c.H);
  in.q = rng.normal_vec(static_cast<size_t>(c.T) * c.H * kDqk);
  in.kv = rng.normal_vec(static_cast<size_t>(c.S) * kDqk);
  in.idx.resize(static_cast<size_t>(c.T) * c.K);
  for (auto& v : in.idx) {
    const float u = rng.uniform(0.0f, 1.0f);
    v = u < c.invalid_frac / 2 ? kInvalidIndex
                               : (u < c.invalid_frac ? c.S + rng.integer(0, 5) : rng.integer(0, c.S - 1));
  }
  if (c.empty_row) std::fill(in.idx.begin() + c.K, in.idx.begin() + 2 * c.K, kInvalidIndex);   // row 1
  if (c.lengths) {
    in.len.resize(c.T);
    for (int t = 0; t < c.T; ++t) in.len[t] = t == 0 ? c.K + 7 : (t == 2 ? 0 : (t == 3 ? c.K / 3 : c.K));
  }
  return in;
}

AttentionParams params_of(const Case& c, const float* q, const float* kv, const int32_t* idx, const int32_t* len) {
  AttentionParams p;
  p.T = c.T; p.S = c.S; p.H = c.H; p.Dqk = kDqk; p.Dv = kDv; p.scale = kScale;
  p.q = q; p.kv = kv; p.K = c.K; p.indices = idx; p.topk_length = len;
  return p;
}

// Runs version 5 twice on case c and checks it against the fp64 reference with atol_lse / rel_out
// (and out within atol_out elementwise when atol_out > 0).
void check_case(const Case& c, double atol_lse, double rel_out, double atol_out) {
  const Inputs in = make_inputs(c);
  std::vector<double> rout, rlse, rmx;
  reference(in.q, in.kv, in.idx, in.len, c, rout, rlse, rmx);

  DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
  DeviceBuffer<int32_t> didx(in.idx.data(), in.idx.size()), dlen(in.len.empty() ? nullptr : in.len.data(), in.len.size());
  const int version = cuda::kSparseAttentionWgmmaVersion;
  std::vector<std::vector<float>> runs;
  for (int rep = 0; rep < 2; ++rep) {
    Guarded<float> out(rout.size()), lse(rlse.size()), mx(rmx.size());   // bodies poisoned (NaN)
    DeviceBuffer<float> dout(out.data(), out.size()), dlse(lse.data(), lse.size()), dmx(mx.data(), mx.size());
    const AttentionParams p = params_of(c, dq.data(), dkv.data(), didx.data(), dlen.data());
    const size_t ws_bytes = cuda::sparse_attention_forward_workspace_bytes(p, version);
    if (cuda::sparse_attention_forward_wgmma_available(p))
      EXPECT_EQ(ws_bytes, static_cast<size_t>(c.S) * kDqk * 2) << "v5 workspace: the bf16 kv copy";
    void* ws = nullptr;
    if (ws_bytes) DSA_CUDA_TEST_CHECK(cudaMalloc(&ws, ws_bytes));
    cuda::sparse_attention_forward(p, AttentionForwardOut{dout.data(), dlse.data(), dmx.data()}, ws, ws_bytes, nullptr,
                                   version);
    sync_and_check("sparse_attention_forward (v5)");
    if (ws) cudaFree(ws);
    dout.download(out.data(), "out");
    dlse.download(lse.data(), "lse");
    dmx.download(mx.data(), "max_logits");
    EXPECT_GUARDS(out);
    EXPECT_GUARDS(lse);
    EXPECT_GUARDS(mx);
    // ±inf parity (and no NaN left from the poison: every element written), then the bound.
    EXPECT_TRUE(all_close(lse.data(), rlse.data(), rlse.size(), atol_lse, 0.0)) << "lse";
    EXPECT_TRUE(all_close(mx.data(), rmx.data(), rmx.size(), atol_lse, 0.0)) << "max_logits";
    const Diff d = compare(out.data(), rout.data(), rout.size());
    EXPECT_FALSE(d.special_mismatch) << d.where;
    EXPECT_LE(std::sqrt(d.nmse), rel_out) << "out relative L2 error";
    if (atol_out > 0) EXPECT_TRUE(all_close(out.data(), rout.data(), rout.size(), atol_out, 0.0)) << "out";
    // Empty rows (all-invalid row 1, topk_length 0 row 2): exactly 0 / +inf / −inf.
    for (size_t row = 0; row < rlse.size(); ++row)
      if (std::isinf(rlse[row])) {
        EXPECT_EQ(lse[row], INFINITY) << "empty row " << row;
        EXPECT_EQ(mx[row], -INFINITY) << "empty row " << row;
        for (int dd = 0; dd < kDv; ++dd) ASSERT_EQ(out[row * kDv + dd], 0.0f) << "empty row " << row;
      }
    runs.push_back(out.vec());
    runs.back().insert(runs.back().end(), lse.data(), lse.data() + lse.size());
    runs.back().insert(runs.back().end(), mx.data(), mx.data() + mx.size());
  }
  EXPECT_TRUE(bitwise_equal(runs[0].data(), runs[1].data(), runs[0].size())) << "rerun differs";
}

TEST(CudaAttentionWgmma, SparseForwardMatchesFloat64) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  {
    const Case probe{"probe", 1, 64, 64, 64, 0.0, false, false};
    const Inputs in = make_inputs(probe);
    DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
    if (!cuda::sparse_attention_forward_wgmma_available(params_of(probe, dq.data(), dkv.data(), nullptr, nullptr)))
      GTEST_SKIP() << "v5 does not run here (needs an sm_90 device and sm_90a code in this binary)";
  }
  const Case cases[] = {
      {"H=64 K=256 (4 whole tiles)", 3, 300, 64, 256, 0.05, false, false},
      {"H=128 K=100 (tile tail), empty row, topk_length K+7 (clamped) / K / 0 / K/3", 4, 257, 128, 100, 0.1, true, true},
      {"T=1 S<K (duplicates) K=65 (tile+1)", 1, 40, 64, 65, 0.1, false, false},
      {"H=128 K=63 (tile-1)", 2, 500, 128, 63, 0.05, false, false},
      {"K=1", 2, 5, 64, 1, 0.0, false, false},
      {"long row K=640 (10 tiles: the key-id ring wraps)", 2, 2000, 64, 640, 0.02, false, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    check_case(c, kLseAtol, kOutRelL2, 0.0);
  }
}

// Version 5 on a shape it does not take (H = 32) runs the fallback chain (v4 / v3 need H % 64 too,
// so v1): the fp32 result on any GPU.
TEST(CudaAttentionWgmma, UnsupportedShapeFallsBack) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  const Case c{"H=32 K=70: fallback to v1", 2, 100, 32, 70, 0.1, false, false};
  {
    const Inputs in = make_inputs(c);
    DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
    const AttentionParams p = params_of(c, dq.data(), dkv.data(), nullptr, nullptr);
    EXPECT_FALSE(cuda::sparse_attention_forward_wgmma_available(p));
  }
  check_case(c, kFallbackAtol, kFallbackAtol, kFallbackAtol);
}

// A workspace smaller than the query asks for is a named error, thrown before anything is written.
TEST(CudaAttentionWgmma, SmallWorkspaceIsNamedError) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  const Case c{"H=64 K=64", 1, 80, 64, 64, 0.0, false, false};
  const Inputs in = make_inputs(c);
  DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
  DeviceBuffer<int32_t> didx(in.idx.data(), in.idx.size());
  const AttentionParams p = params_of(c, dq.data(), dkv.data(), didx.data(), nullptr);
  const int version = cuda::kSparseAttentionWgmmaVersion;
  const size_t need = cuda::sparse_attention_forward_workspace_bytes(p, version);
  if (need == 0) GTEST_SKIP() << "neither v5 nor its v4 fallback runs here (no workspace needed)";
  Guarded<float> out(static_cast<size_t>(c.T) * c.H * kDv), lse(static_cast<size_t>(c.T) * c.H);
  DeviceBuffer<float> dout(out.data(), out.size()), dlse(lse.data(), lse.size());
  void* ws = nullptr;
  DSA_CUDA_TEST_CHECK(cudaMalloc(&ws, need));
  try {
    cuda::sparse_attention_forward(p, AttentionForwardOut{dout.data(), dlse.data(), nullptr}, ws, need - 1, nullptr,
                                   version);
    ADD_FAILURE() << "no error for workspace_bytes = need − 1";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("sparse_attention_forward"), std::string::npos) << msg;
    EXPECT_NE(msg.find("workspace_bytes"), std::string::npos) << msg;
  }
  sync_and_check("sparse_attention_forward (v5, small workspace)");
  cudaFree(ws);
  dout.download(out.data(), "out");
  dlse.download(lse.data(), "lse");
  EXPECT_TRUE(out.untouched()) << "out written despite the error";
  EXPECT_TRUE(lse.untouched()) << "lse written despite the error";
}

}  // namespace
}  // namespace dsa::test
