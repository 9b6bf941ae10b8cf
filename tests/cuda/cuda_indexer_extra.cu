// cuda_indexer_extra.cu — GPU-only checks beyond the shared table rows (skipped without a GPU):
//   * the device fp8 e4m3 / bf16 conversions equal the CPU's bit for bit over a large sweep of fp32
//     bit patterns (every 61st pattern, ~70 M values, all specials included) and all 256 codes;
//   * topk_select against the CPU at a long row with heavy ties, NaN and −0, and 20 reruns bitwise;
//   * top-k v2's sampled path (every tuning configuration) against the CPU on trends, ties and
//     misaligned rows;
//   * the fused indexer_topk equals indexer_logits + topk_select of the same variant bit for bit at a
//     long fp8 row (the fused ≡ unfused contract), for every variant the device runs, and its logits
//     are close to the CPU's;
//   * indexer_backward (sparse, duplicated indices) is bitwise deterministic over 20 reruns.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/device_buffer.h"
#include "cuda/indexer_fp8_inputs.h"
#include "dsa/cuda_ops.h"
#include "test_util.h"

namespace dsa::cuda {
// The tuning hook of src/cuda/topk.cu (not public API): runs top-k v2 configuration `config`, returns
// its name, or nullptr past the last one.
const char* topk_select_v2_config(const TopkParams& p, cudaStream_t stream, int config);
}  // namespace dsa::cuda

namespace dsa::test {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

constexpr uint32_t kSweepStride = 61;  // prime stride: every exponent/mantissa region is visited
constexpr uint64_t kPatterns = 1ull << 32;

__global__ void encode_sweep(uint64_t count, uint8_t* fp8, uint16_t* bf16) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < count; i += uint64_t(gridDim.x) * blockDim.x) {
    const float x = cuda::detail::bits_float(static_cast<uint32_t>(i * kSweepStride));
    fp8[i] = cuda::detail::fp8_e4m3_encode(x);
    bf16[i] = cuda::detail::bf16_encode(x);
  }
}
__global__ void decode_all(float* out) {
  out[threadIdx.x] = cuda::detail::fp8_e4m3_decode(static_cast<uint8_t>(threadIdx.x));
}

TEST(CudaIndexer, Fp8Bf16ConversionsMatchCpuBitwise) {
  SKIP_WITHOUT_GPU();
  const uint64_t count = kPatterns / kSweepStride;
  uint8_t* d8 = nullptr;
  uint16_t* d16 = nullptr;
  float* dd = nullptr;
  ASSERT_EQ(cudaMalloc(&d8, count), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d16, count * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dd, 256 * sizeof(float)), cudaSuccess);
  encode_sweep<<<1024, 256>>>(count, d8, d16);
  decode_all<<<1, 256>>>(dd);
  std::vector<uint8_t> h8(count);
  std::vector<uint16_t> h16(count);
  std::vector<float> hd(256);
  ASSERT_EQ(cudaMemcpy(h8.data(), d8, count, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(h16.data(), d16, count * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(hd.data(), dd, 256 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d8);
  cudaFree(d16);
  cudaFree(dd);
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

TEST(CudaIndexer, TopkLongRowTiesNanMatchesCpuAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  const int T = 6, S = 60000, K = 2048;
  Rng rng(501);
  std::vector<float> logits(size_t(T) * S);
  for (auto& v : logits) v = std::round(rng.normal() * 8.0f) / 8.0f;  // ~100 distinct values: heavy ties
  for (int i = 0; i < 500; ++i) logits[rng.integer(0, T * S - 1)] = std::nanf("");
  for (int i = 0; i < 500; ++i) logits[rng.integer(0, T * S - 1)] = -0.0f;
  for (int i = 0; i < 100; ++i) logits[rng.integer(0, T * S - 1)] = -INFINITY;
  std::vector<int32_t> ks = {0, 0, 17, 1000, 59000, 5}, ke = {S, 1500, S, 3048, S, 5};  // short, exact-K, empty rows
  std::vector<int32_t> want(size_t(T) * K);
  cpu::topk_select(TopkParams{T, S, K, logits.data(), ks.data(), ke.data(), want.data()});
  DeviceBuffer<float> dl(logits.data(), logits.size());
  DeviceBuffer<int32_t> dks(ks.data(), T), dke(ke.data(), T);
  std::vector<int32_t> first;
  for (int rep = 0; rep < 20; ++rep) {
    std::vector<int32_t> got(size_t(T) * K, 12345);
    DeviceBuffer<int32_t> idx(got.data(), got.size());
    const size_t wsb = cuda::topk_select_workspace_bytes(T, S, K);
    void* ws = nullptr;
    if (wsb) ASSERT_EQ(cudaMalloc(&ws, wsb), cudaSuccess);
    cuda::topk_select(TopkParams{T, S, K, dl.data(), dks.data(), dke.data(), idx.data()}, ws, wsb, nullptr);
    sync_and_check("topk_select");
    if (ws) cudaFree(ws);
    idx.download(got.data(), "indices");
    if (rep == 0) {
      first = got;
      ASSERT_EQ(got, want) << "differs from the CPU selection";
    } else {
      ASSERT_TRUE(bitwise_equal(got.data(), first.data(), got.size())) << "rerun " << rep << " differs";
    }
  }
}

// The sampled path of top-k v2 (K ≤ 2048, rows ≥ 4096 keys) in every tuning configuration: unique
// continuous values, rows in ascending and descending order (the sample sees a trend), a row of two
// values (ties swamp the threshold: the fallback), misaligned row starts (S odd, odd ks) and lengths
// 4095 / 4096 / 4099 around the sampled path's minimum, at K = 2048, 777 and 1 — each = the CPU.
TEST(CudaIndexer, TopkSampledPathAllConfigsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int T = 8, S = 70001;
  Rng rng(504);
  std::vector<float> logits(size_t(T) * S);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < S; ++s) {
      float& x = logits[size_t(t) * S + s];
      if (t == 1) x = float(s) * 1e-3f;                 // ascending: the best keys at the end
      else if (t == 2) x = -float(s);                   // descending
      else if (t == 3) x = float(rng.integer(0, 1));    // two values
      else x = rng.normal();
    }
  const std::vector<int32_t> ks = {0, 3, 1, 0, 5, 1, S - 4096, 100};
  const std::vector<int32_t> ke = {S, S, S - 2, S, 5 + 4096, 1 + 4095, S, 100 + 4099};
  DeviceBuffer<float> dl(logits.data(), logits.size());
  DeviceBuffer<int32_t> dks(ks.data(), T), dke(ke.data(), T);
  for (int K : {2048, 777, 1}) {
    std::vector<int32_t> want(size_t(T) * K);
    cpu::topk_select(TopkParams{T, S, K, logits.data(), ks.data(), ke.data(), want.data()});
    for (int config = -1;; ++config) {  // −1: topk_select's default v2
      std::vector<int32_t> got(size_t(T) * K, 12345);
      DeviceBuffer<int32_t> idx(got.data(), got.size());
      const TopkParams p{T, S, K, dl.data(), dks.data(), dke.data(), idx.data()};
      const char* name = "default";
      if (config < 0) cuda::topk_select(p, nullptr, 0, nullptr);
      else name = cuda::topk_select_v2_config(p, nullptr, config);
      if (name == nullptr) break;
      sync_and_check("topk_select");
      idx.download(got.data(), "indices");
      for (int t = 0; t < T; ++t)
        ASSERT_TRUE(bitwise_equal(got.data() + size_t(t) * K, want.data() + size_t(t) * K, size_t(K)))
            << "config " << name << ", K = " << K << ", row " << t;
    }
  }
}

TEST(CudaIndexer, FusedEqualsUnfusedAtLongFp8Row) {
  SKIP_WITHOUT_GPU();
  const int T = 3, S = 20000, HI = 64, DI = 128, K = 2048;
  Rng rng(502);
  std::vector<float> qf = rng.normal_vec(size_t(T) * HI * DI), kf = rng.normal_vec(size_t(S) * DI),
                     wf = rng.normal_vec(size_t(T) * HI);
  std::vector<uint8_t> q8(qf.size()), k8(kf.size());
  std::vector<float> ksc(S), wfold(wf.size());
  cpu::indexer_quantize_fp8(IndexerQuantizeParams{T, S, HI, DI, ScaleFormat::kUe8m0, qf.data(), kf.data(), wf.data(),
                                                  q8.data(), k8.data(), ksc.data(), wfold.data()});
  std::vector<int32_t> ks = {0, 100, 0}, ke = {S, 15000, 1500};
  IndexerParams h;
  h.T = T;
  h.S = S;
  h.HI = HI;
  h.DI = DI;
  h.precision = Precision::kFp8;
  h.q = q8.data();
  h.k = k8.data();
  h.k_scale = ksc.data();
  h.w = wfold.data();
  h.ks = ks.data();
  h.ke = ke.data();
  std::vector<float> cpu_logits(size_t(T) * S);
  cpu::indexer_logits(h, cpu_logits.data());
  DeviceBuffer<uint8_t> dq(q8.data(), q8.size()), dk(k8.data(), k8.size());
  DeviceBuffer<float> dsc(ksc.data(), S), dw(wfold.data(), wfold.size());
  DeviceBuffer<int32_t> dks(ks.data(), T), dke(ke.data(), T);
  IndexerParams d = h;
  d.q = dq.data();
  d.k = dk.data();
  d.k_scale = dsc.data();
  d.w = dw.data();
  d.ks = dks.data();
  d.ke = dke.data();
  // ‖q_h‖ and ‖k_s‖ of the e4m3 values (the kWgmma error scale below).
  std::vector<double> qnorm(size_t(T) * HI, 0.0), knorm(S, 0.0);
  for (size_t i = 0; i < q8.size(); ++i) qnorm[i / DI] += std::pow(double(cpu::fp8_e4m3_to_float(q8[i])), 2);
  for (size_t i = 0; i < k8.size(); ++i) knorm[i / DI] += std::pow(double(cpu::fp8_e4m3_to_float(k8[i])), 2);
  for (double& x : qnorm) x = std::sqrt(x);
  for (double& x : knorm) x = std::sqrt(x);
  int ran = 0;
  for (const cuda::Variant v : {cuda::Variant::kExact, cuda::Variant::kMma, cuda::Variant::kWgmma}) {
    try {
      cuda::resolve_variant(d, v, "indexer_topk");
    } catch (const Error& e) {
      std::printf("[ skipped ] %s\n", e.what());
      continue;
    }
    ++ran;
    std::vector<float> logits(size_t(T) * S, 7.0f);
    std::vector<int32_t> unfused(size_t(T) * K, 7), fused(size_t(T) * K, 7);
    DeviceBuffer<float> dl(logits.data(), logits.size());
    DeviceBuffer<int32_t> di1(unfused.data(), unfused.size()), di2(fused.data(), fused.size());
    cuda::indexer_logits(d, dl.data(), nullptr, v);
    cuda::topk_select(TopkParams{T, S, K, dl.data(), dks.data(), dke.data(), di1.data()}, nullptr, 0, nullptr);
    const size_t wsb = cuda::indexer_topk_workspace_bytes(d, K, v);
    void* ws = nullptr;
    if (wsb) ASSERT_EQ(cudaMalloc(&ws, wsb), cudaSuccess);
    cuda::indexer_topk(d, K, di2.data(), ws, wsb, nullptr, v);
    sync_and_check("indexer_topk");
    if (ws) cudaFree(ws);
    dl.download(logits.data(), "logits");
    di1.download(unfused.data(), "unfused");
    di2.download(fused.data(), "fused");
    EXPECT_EQ(fused, unfused) << cuda::variant_name(v) << ": fused != indexer_logits + topk_select";
    // vs the CPU: fp32 sums in another order. |I| ≤ Σ_h |w|·|u|; each dot of 128 exact products has a
    // relative error ≤ 128·2^-24 of Σ|q·k|, so 1e-4 of the row's largest |logit| + 1e-5 relative covers
    // it (measured ≈ 1e-6). kWgmma accumulates the e4m3 products with fewer bits than fp32: add its
    // bound kFp8AccumRel·mag (indexer_fp8_inputs.h), mag = k_scale·Σ_h |w|·Σ_d |q·k| bounded above by
    // k_scale·Σ_h |w|·‖q_h‖·‖k‖ (Cauchy–Schwarz).
    double amax = 0;
    for (float x : cpu_logits)
      if (std::isfinite(x)) amax = std::max(amax, std::fabs(double(x)));
    if (v != cuda::Variant::kWgmma) {
      EXPECT_TRUE(all_close(logits.data(), cpu_logits.data(), logits.size(), 1e-4 * amax, 1e-5))
          << cuda::variant_name(v);
      continue;
    }
    for (int t = 0; t < T; ++t)
      for (int s = 0; s < S; ++s) {
        const size_t i = size_t(t) * S + s;
        if (!std::isfinite(cpu_logits[i])) {
          ASSERT_EQ(logits[i], cpu_logits[i]) << "wgmma, element " << i;
          continue;
        }
        double mag = 0;
        for (int hh = 0; hh < HI; ++hh)
          mag += std::fabs(double(wfold[size_t(t) * HI + hh])) * qnorm[size_t(t) * HI + hh];
        mag *= double(ksc[s]) * knorm[s];
        const double tol = 1e-4 * amax + 1e-5 * std::fabs(double(cpu_logits[i])) + kFp8AccumRel * mag;
        ASSERT_LE(std::fabs(double(logits[i]) - cpu_logits[i]), tol) << "wgmma, element " << i;
      }
  }
  EXPECT_GE(ran, 1) << "kExact runs on every device";
}

TEST(CudaIndexer, BackwardIsBitwiseDeterministic) {
  SKIP_WITHOUT_GPU();
  const int T = 40, S = 300, HI = 8, DI = 64, K = 96;
  Rng rng(503);
  std::vector<float> q = rng.normal_vec(size_t(T) * HI * DI), k = rng.normal_vec(size_t(S) * DI),
                     w = rng.normal_vec(size_t(T) * HI), dI = rng.normal_vec(size_t(T) * K);
  std::vector<int32_t> ks(T, 0), ke(T, S), idx(size_t(T) * K);
  for (auto& i : idx) i = rng.integer(-1, 40);  // many duplicates and −1: contention on few keys
  IndexerBackwardParams h;
  h.fwd.T = T;
  h.fwd.S = S;
  h.fwd.HI = HI;
  h.fwd.DI = DI;
  DeviceBuffer<float> dq_in(q.data(), q.size()), dk_in(k.data(), k.size()), dw_in(w.data(), w.size()),
      ddI(dI.data(), dI.size());
  DeviceBuffer<int32_t> dks(ks.data(), T), dke(ke.data(), T), didx(idx.data(), idx.size());
  h.fwd.q = dq_in.data();
  h.fwd.k = dk_in.data();
  h.fwd.w = dw_in.data();
  h.fwd.ks = dks.data();
  h.fwd.ke = dke.data();
  h.K = K;
  h.indices = didx.data();
  h.d_logits = ddI.data();
  std::vector<float> first;
  for (int rep = 0; rep < 20; ++rep) {
    std::vector<float> dq(q.size()), dk(k.size()), dw(w.size());
    DeviceBuffer<float> ddq(dq.data(), dq.size()), ddk(dk.data(), dk.size()), ddw(dw.data(), dw.size());
    h.dq = ddq.data();
    h.dk = ddk.data();
    h.dw = ddw.data();
    const size_t wsb = cuda::indexer_backward_workspace_bytes(h);
    void* ws = nullptr;
    if (wsb) ASSERT_EQ(cudaMalloc(&ws, wsb), cudaSuccess);
    cuda::indexer_backward(h, ws, wsb, nullptr);
    sync_and_check("indexer_backward");
    if (ws) cudaFree(ws);
    ddq.download(dq.data(), "dq");
    ddk.download(dk.data(), "dk");
    ddw.download(dw.data(), "dw");
    std::vector<float> all = dq;
    all.insert(all.end(), dk.begin(), dk.end());
    all.insert(all.end(), dw.begin(), dw.end());
    if (rep == 0) first = all;
    else ASSERT_TRUE(bitwise_equal(all.data(), first.data(), all.size())) << "rerun " << rep << " differs";
  }
}

}  // namespace
}  // namespace dsa::test
