// indexer_topk_wgmma_test.cu — indexer_topk variant kWgmma (the chunked pipeline of
// src/cuda/indexer_topk.cu with the wgmma logits of indexer_logits_wgmma.cu) on the GPU.
//
// Oracles:
//   * the contract (ops.h §5): fused indexer_topk kWgmma ≡ topk_select(indexer_logits kWgmma) bit for bit,
//     at T = 1, S = 1, S < K, S not a multiple of the 64-key tile, causal and packed ranges, empty
//     rows, and T = 300 × S = 131071 (≈ 2 workspace chunks of 256 rows: rows on both sides of the
//     chunk boundary);
//   * a float64 reference selection "up to ties": kWgmma logits differ from the fp64 ones by at most
//     tol = kFp8AccumRel·mag (indexer_wgmma_test.cu derives this bound), so every selected key a and
//     every in-range key b left out must satisfy ref[a] + tol[a] ≥ ref[b] − tol[b], and consecutive
//     slots must be in descending reference order up to the same slack; plus the selection
//     invariants (count = min(K, range), in range, distinct, −1 tail) and the device guards;
//   * bitwise determinism over a rerun; workspace errors name the op and the argument and leave the
//     indices untouched.
// Skipped without a GPU and where kWgmma does not run (not an sm_90 device, or a binary without sm_90a
// code): there asking for it is a dsa::Error (indexer_wgmma_test.cu) and kAuto runs kMma, which
// cuda_indexer_extra.cu and the table rows cover.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/indexer_logits_wgmma.cuh"
#include "cuda/indexer_fp8_inputs.h"
#include "dsa/cuda_ops.h"
#include "test_util.h"

namespace dsa::test {
namespace {

constexpr int kHI = kWgmmaHI, kDI = kIndexerKeyDim;
constexpr cuda::Variant kWgmma = cuda::Variant::kWgmma;
// kWgmma's error bound: kFp8AccumRel (indexer_fp8_inputs.h).

IndexerParams probe_params() {
  static uint8_t dummy alignas(16)[16];  // use_logits_wgmma reads no data: host pointers suffice
  IndexerParams p;
  p.HI = kHI;
  p.DI = kDI;
  p.precision = Precision::kFp8;
  p.q = dummy;
  p.k = dummy;
  return p;
}

#define SKIP_UNLESS_WGMMA()                                                 \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";                        \
  if (!cuda::detail::use_logits_wgmma(probe_params()))                      \
  GTEST_SKIP() << "indexer_topk kWgmma does not run here (needs sm_90 + sm_90a code)"

struct Case {
  std::string name;
  int T, S;
  std::vector<int32_t> ks, ke;
  std::vector<int> budgets;
  std::vector<int> ref_rows;  // rows checked against the fp64 reference (empty: all)
};

Case causal(const std::string& name, int T, int S, std::vector<int> budgets, std::vector<int> ref_rows = {}) {
  Case c{name, T, S, {}, {}, std::move(budgets), std::move(ref_rows)};
  for (int t = 0; t < T; ++t) c.ks.push_back(0), c.ke.push_back(S - T + t + 1);
  return c;
}

// Quantized normals, as in production (cpu::indexer_quantize_fp8, ue8m0 scales).
struct Data : Fp8IndexerInputs {
  std::vector<float> qd, kd;  // q, k decoded (exact: every e4m3 value is an fp32)
};
Data make_data(const Case& c, uint64_t seed) {
  Data d;
  static_cast<Fp8IndexerInputs&>(d) = quantized_normal_inputs(c.T, c.S, seed);
  d.qd.resize(d.q.size());
  d.kd.resize(d.k.size());
  for (size_t i = 0; i < d.q.size(); ++i) d.qd[i] = cpu::fp8_e4m3_to_float(d.q[i]);
  for (size_t i = 0; i < d.k.size(); ++i) d.kd[i] = cpu::fp8_e4m3_to_float(d.k[i]);
  return d;
}

// Device copies of a case's inputs and the IndexerParams over them.
struct DeviceInputs : Fp8IndexerDevice {
  DeviceInputs(const Case& c, const Data& d) : Fp8IndexerDevice(c.T, c.S, d, c.ks, c.ke) {}
};

// indexer_topk kWgmma with a workspace of exactly the queried size; the indices start as sentinels.
// extra_bytes: more workspace than the query asks for (indexer_topk then runs larger logits chunks).
std::vector<int32_t> fused(const DeviceInputs& in, int K, size_t extra_bytes = 0) {
  std::vector<int32_t> idx(size_t(in.p.T) * K, sentinel_value<int32_t>());
  DeviceBuffer<int32_t> di(idx.data(), idx.size());
  const size_t wsb = cuda::indexer_topk_workspace_bytes(in.p, K, kWgmma) + extra_bytes;
  void* ws = nullptr;
  if (wsb) DSA_CUDA_TEST_CHECK(cudaMalloc(&ws, wsb));
  cuda::indexer_topk(in.p, K, di.data(), ws, wsb, nullptr, kWgmma);
  sync_and_check("indexer_topk");
  if (ws) cudaFree(ws);
  di.download(idx.data(), "fused indices");
  return idx;
}

// topk_select(indexer_logits kWgmma): the unfused path of the same variant.
std::vector<int32_t> unfused(const DeviceInputs& in, int K) {
  std::vector<float> logits(size_t(in.p.T) * in.p.S, std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> idx(size_t(in.p.T) * K, sentinel_value<int32_t>());
  DeviceBuffer<float> dl(logits.data(), logits.size());
  DeviceBuffer<int32_t> di(idx.data(), idx.size());
  cuda::indexer_logits(in.p, dl.data(), nullptr, kWgmma);
  const size_t wsb = cuda::topk_select_workspace_bytes(in.p.T, in.p.S, K);
  void* ws = nullptr;
  if (wsb) DSA_CUDA_TEST_CHECK(cudaMalloc(&ws, wsb));
  cuda::topk_select(TopkParams{in.p.T, in.p.S, K, dl.data(), in.p.ks, in.p.ke, di.data()}, ws, wsb, nullptr);
  sync_and_check("indexer_logits + topk_select");
  if (ws) cudaFree(ws);
  dl.download(nullptr, "logits");
  di.download(idx.data(), "unfused indices");
  return idx;
}

// fp64 logit and its error scale mag for one (t, s).
void ref_logit(const Data& d, int t, int s, double* ref, double* mag) {
  double acc = 0, m = 0;
  const float* kr = &d.kd[size_t(s) * kDI];
  for (int h = 0; h < kHI; ++h) {
    const float* qh = &d.qd[(size_t(t) * kHI + h) * kDI];
    double u = 0, ua = 0;
    for (int i = 0; i < kDI; ++i) {
      const double x = double(qh[i]) * kr[i];
      u += x;
      ua += std::fabs(x);
    }
    const double w = d.w[size_t(t) * kHI + h];
    acc += w * std::max(u, 0.0);
    m += std::fabs(w) * ua;
  }
  *ref = d.ksc[s] * acc;
  *mag = d.ksc[s] * m;
}

// Selection invariants of row t, then "top-K of the fp64 logits up to the kWgmma error bound".
::testing::AssertionResult matches_reference(const Case& c, const Data& d, const std::vector<int32_t>& idx, int K,
                                             int t) {
  const int lo = c.ks[t], hi = c.ke[t], len = std::max(hi - lo, 0), want = std::min(K, len);
  const int32_t* row = idx.data() + size_t(t) * K;
  std::vector<char> chosen(static_cast<size_t>(len), 0);
  for (int j = 0; j < K; ++j) {
    if (j >= want) {
      if (row[j] != kInvalidIndex) return ::testing::AssertionFailure() << "row " << t << " slot " << j << " must be -1";
      continue;
    }
    if (row[j] < lo || row[j] >= hi)
      return ::testing::AssertionFailure() << "row " << t << " slot " << j << " = " << row[j] << " out of range";
    if (chosen[size_t(row[j] - lo)]++)
      return ::testing::AssertionFailure() << "row " << t << " duplicate index " << row[j];
  }
  std::vector<double> ref(static_cast<size_t>(len)), tol(static_cast<size_t>(len));
  for (int s = lo; s < hi; ++s) {
    double mag = 0;
    ref_logit(d, t, s, &ref[size_t(s - lo)], &mag);
    tol[size_t(s - lo)] = kFp8AccumRel * mag;
  }
  double sel_floor = std::numeric_limits<double>::infinity(), rest_ceil = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < len; ++i) {
    if (chosen[size_t(i)]) sel_floor = std::min(sel_floor, ref[size_t(i)] + tol[size_t(i)]);
    else rest_ceil = std::max(rest_ceil, ref[size_t(i)] - tol[size_t(i)]);
  }
  if (!(sel_floor >= rest_ceil))
    return ::testing::AssertionFailure() << "row " << t << ": a key left out beats a selected one beyond the kWgmma "
                                         << "error bound (" << rest_ceil << " > " << sel_floor << ")";
  for (int j = 0; j + 1 < want; ++j) {
    const size_t a = size_t(row[j] - lo), b = size_t(row[j + 1] - lo);
    if (!(ref[a] + tol[a] >= ref[b] - tol[b]))
      return ::testing::AssertionFailure() << "row " << t << " slots " << j << ", " << j + 1
                                           << " out of descending order beyond the kWgmma error bound";
  }
  return ::testing::AssertionSuccess();
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  cs.push_back({"T1_S1", 1, 1, {0}, {1}, {1, 4}, {}});
  cs.push_back({"T1_S1000_full", 1, 1000, {0}, {1000}, {1, 64, 999, 1000, 2048}, {}});
  cs.push_back(causal("causal_T9_S777", 9, 777, {1, 128, 777, 2048}));
  // Packed sequences and empty / one-key rows; S = 5000 is not a multiple of 64.
  cs.push_back({"packed_T7_S5000", 7, 5000, {0, 0, 10, 2000, 2000, 4999, 2000}, {1000, 1250, 10, 2700, 3400, 5000, 5000},
                {1, 300, 2048}, {}});
  return cs;
}

void check_cases(const std::vector<Case>& cs, uint64_t seed) {
  for (const Case& c : cs) {
    const Data d = make_data(c, ++seed);
    const DeviceInputs in(c, d);
    ASSERT_EQ(cuda::resolve_variant(in.p, kWgmma, "indexer_topk"), kWgmma) << c.name << ": kWgmma must run these inputs";
    for (int K : c.budgets) {
      const std::string name = c.name + "/K" + std::to_string(K);
      const std::vector<int32_t> f = fused(in, K), u = unfused(in, K), again = fused(in, K);
      ASSERT_TRUE(bitwise_equal(f.data(), u.data(), f.size()))
          << name << ": fused kWgmma != topk_select(indexer_logits kWgmma)";
      EXPECT_TRUE(bitwise_equal(f.data(), again.data(), f.size())) << name << ": rerun differs";
      std::vector<int> rows = c.ref_rows;
      if (rows.empty())
        for (int t = 0; t < c.T; ++t) rows.push_back(t);
      for (int t : rows) ASSERT_TRUE(matches_reference(c, d, f, K, t)) << name;
    }
  }
}

TEST(CudaIndexerTopkWgmma, FusedEqualsUnfusedAndReference) {
  SKIP_UNLESS_WGMMA();
  check_cases(cases(), 1200);
}

// T = 300 × S = 131071: mma_chunk_rows = ⌊128 MiB / (4·S)⌋ = 256 → chunks [0, 256) and [256, 300)
// (and one chunk when the caller passes 64 MiB more);
// the fp64 reference (8192 MACs per logit) is checked on the rows around the boundary only. A test of
// its own so that compute-sanitizer runs can filter it out (its kernels are long under memcheck).
TEST(CudaIndexerTopkWgmma, ChunkBoundary) {
  SKIP_UNLESS_WGMMA();
  const Case c = causal("causal_T300_S131071_chunks", 300, 131071, {2048}, {0, 255, 256, 299});
  check_cases({c}, 1300);
  // A larger workspace (+64 MiB: all 300 rows in one chunk) must give the same indices, bitwise.
  const Data d = make_data(c, 1301);
  const DeviceInputs in(c, d);
  const std::vector<int32_t> two_chunks = fused(in, 2048), one_chunk = fused(in, 2048, size_t(64) << 20);
  EXPECT_TRUE(bitwise_equal(two_chunks.data(), one_chunk.data(), two_chunks.size()))
      << "indexer_topk kWgmma: the chunk size (set by workspace_bytes) changed the selection";
}

TEST(CudaIndexerTopkWgmma, WorkspaceIsTheChunkedMmaSize) {
  SKIP_UNLESS_WGMMA();
  const Case c = causal("ws", 300, 131071, {});
  IndexerParams p = probe_params();
  p.T = c.T;
  p.S = c.S;
  // kWgmma runs the same chunked pipeline as kMma: same chunk rows, same workspace.
  const size_t wg = cuda::indexer_topk_workspace_bytes(p, 2048, kWgmma);
  EXPECT_EQ(wg, cuda::indexer_topk_workspace_bytes(p, 2048, cuda::Variant::kMma));
  EXPECT_EQ(wg, size_t(256) * c.S * sizeof(float));  // ⌊128 MiB / (4·S)⌋ = 256 rows of logits
}

TEST(CudaIndexerTopkWgmma, WorkspaceErrorsNameTheArgument) {
  SKIP_UNLESS_WGMMA();
  const Case c = causal("bad_ws", 5, 1000, {});
  const Data d = make_data(c, 77);
  const DeviceInputs in(c, d);
  const int K = 16;
  const size_t need = cuda::indexer_topk_workspace_bytes(in.p, K, kWgmma);
  ASSERT_GT(need, 0u);
  std::vector<int32_t> idx(size_t(c.T) * K, sentinel_value<int32_t>()), back(idx.size());
  DeviceBuffer<int32_t> di(idx.data(), idx.size());
  void* ws = nullptr;
  DSA_CUDA_TEST_CHECK(cudaMalloc(&ws, need));
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_topk(in.p, K, di.data(), nullptr, need, nullptr, kWgmma); },
                            {"indexer_topk", "workspace_bytes"}));
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_topk(in.p, K, di.data(), ws, need - 1, nullptr, kWgmma); },
                            {"indexer_topk", "workspace_bytes"}));
  sync_and_check("indexer_topk (bad workspace)");
  cudaFree(ws);
  di.download(back.data(), "indices");
  EXPECT_TRUE(bitwise_equal(idx.data(), back.data(), idx.size())) << "indices written before the throw";
}

}  // namespace
}  // namespace dsa::test
