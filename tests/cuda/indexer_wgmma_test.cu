// indexer_wgmma_test.cu — indexer_logits variant kWgmma (sm_90a; src/cuda/indexer_logits_wgmma.cu)
// against a float64 reference and against variant kMma. Skipped without a GPU, and where kWgmma does
// not run (not an sm_90 device, or a binary without sm_90a code): asking for it there is a dsa::Error,
// and kAuto runs kMma, which the table rows cover. On any GPU: kWgmma on inputs it does not take
// (HI ≠ 64, misaligned q, fp32 precision) is a dsa::Error naming the op, the variant and the reason.
//
// Two kinds of data:
//   * exact dots: q, k ∈ {0, ±1/2, ±1, ±2} (e4m3 codes). Every product is a multiple of 1/4 and
//     |u| ≤ 512, so every partial sum of a dot is exact in ANY accumulator of ≥ 12 bits: the only
//     error left is the fp32 epilogue (HI fmaf + 3 adds + 1 multiply). This pins the operand
//     layouts, swizzles, head/weight permutation and the quad transpose with a tight tolerance.
//   * quantized normals (cpu::indexer_quantize_fp8, as in production): the fp8 tensor core
//     accumulates with fewer bits than fp32 (DeepSeek-V3 report §3.3.2: ≈ 14 bits kept), bounded
//     below relative to mag = k_scale·Σ_h |w|·Σ_d |q_d·k_d|.
// Shapes: T = 1 (three idle query slots in the CTA), S = 1, S not a multiple of the 64-key tile,
// empty / one-key / full / causal / packed multi-sequence ranges, T small enough that the keys are
// split over CTAs (T = 7, S = 5000), several query blocks (T = 66). Every output element is checked
// (the body starts as NaN, so an unwritten element fails), −inf exactly outside the ranges, device
// guard sentinels, bitwise determinism over reruns.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/device_buffer.h"
#include "cuda/indexer_logits_wgmma.cuh"
#include "cuda/indexer_fp8_inputs.h"
#include "dsa/cuda_ops.h"
#include "test_util.h"

namespace dsa::test {
namespace {

constexpr int kHI = kWgmmaHI, kDI = kIndexerKeyDim;
constexpr double kFp32Unit = 1.0 / (1 << 24);  // u = 2^-24, unit roundoff of fp32
// Exact-dot data: the epilogue is a chain of HI fmaf, 3 shuffle adds and the k_scale product, each
// one rounding: |error| ≤ (HI + 4)·u·k_scale·Σ_h |w·ReLU(u_h)| (first-order bound, ×2 for safety).
constexpr double kEpilogueRel = 2.0 * (kHI + 4) * kFp32Unit;
// Quantized-normal data: kFp8AccumRel (indexer_fp8_inputs.h).

struct Case {
  int T, S;
  std::vector<int32_t> ks, ke;
};

using Data = Fp8IndexerInputs;

Data exact_dot_data(const Case& c, uint64_t seed) {
  Rng rng(seed);
  const float levels[] = {0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 2.0f, -2.0f};
  Data d;
  d.q.resize(size_t(c.T) * kHI * kDI);
  d.k.resize(size_t(c.S) * kDI);
  for (auto& b : d.q) b = cpu::fp8_e4m3_from_float(levels[rng.integer(0, 6)]);
  for (auto& b : d.k) b = cpu::fp8_e4m3_from_float(levels[rng.integer(0, 6)]);
  d.w = rng.normal_vec(size_t(c.T) * kHI);
  d.ksc = rng.uniform_vec(c.S, 0.25f, 2.0f);
  return d;
}

Data quantized_normal_data(const Case& c, uint64_t seed) { return quantized_normal_inputs(c.T, c.S, seed); }

// fp64 reference: ref = k_scale·Σ_h w·ReLU(u_h); act = k_scale·Σ_h |w·ReLU(u_h)| (epilogue error
// scale); mag = k_scale·Σ_h |w|·Σ_d |q·k| (accumulation error scale). −inf outside [ks, ke).
struct Ref {
  std::vector<double> ref, act, mag;
};
Ref reference(const Case& c, const Data& d) {
  const size_t n = size_t(c.T) * c.S;
  Ref r{std::vector<double>(n, -std::numeric_limits<double>::infinity()), std::vector<double>(n, 0.0),
        std::vector<double>(n, 0.0)};
  std::vector<double> qv(d.q.size()), kv(d.k.size());
  for (size_t i = 0; i < qv.size(); ++i) qv[i] = cpu::fp8_e4m3_to_float(d.q[i]);
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = cpu::fp8_e4m3_to_float(d.k[i]);
  for (int t = 0; t < c.T; ++t)
    for (int s = c.ks[t]; s < c.ke[t]; ++s) {
      double acc = 0, act = 0, mag = 0;
      for (int h = 0; h < kHI; ++h) {
        const double* qh = &qv[(size_t(t) * kHI + h) * kDI];
        const double* kr = &kv[size_t(s) * kDI];
        double u = 0, ua = 0;
        for (int i = 0; i < kDI; ++i) {
          u += qh[i] * kr[i];
          ua += std::fabs(qh[i] * kr[i]);
        }
        const double w = d.w[size_t(t) * kHI + h];
        acc += w * std::max(u, 0.0);
        act += std::fabs(w * std::max(u, 0.0));
        mag += std::fabs(w) * ua;
      }
      const size_t i = size_t(t) * c.S + s;
      r.ref[i] = d.ksc[s] * acc;
      r.act[i] = d.ksc[s] * act;
      r.mag[i] = d.ksc[s] * mag;
    }
  return r;
}

// Runs indexer_logits `variant` (config < 0) or kWgmma configuration `config` on device copies; the
// output body starts as NaN (unwritten → fail).
std::vector<float> run(const Case& c, const Data& d, cuda::Variant variant, int config = -1) {
  const Fp8IndexerDevice in(c.T, c.S, d, c.ks, c.ke);
  const IndexerParams& p = in.p;
  std::vector<float> out(size_t(c.T) * c.S, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer<float> dout(out.data(), out.size());
  if (config < 0) cuda::indexer_logits(p, dout.data(), nullptr, variant);
  else EXPECT_NE(cuda::detail::run_logits_wgmma_config(p, dout.data(), nullptr, config), nullptr);
  sync_and_check("indexer_logits");
  dout.download(out.data(), "logits");
  return out;
}

// |got − ref| ≤ tol·scale[i] (+ a subnormal floor), −inf exactly where ref is −inf; reports the
// largest error / scale seen.
::testing::AssertionResult within(const std::vector<float>& got, const Ref& r, const std::vector<double>& scale,
                                  double tol, double* worst) {
  *worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(r.ref[i])) {
      if (!(std::isinf(got[i]) && got[i] < 0))
        return ::testing::AssertionFailure() << "element " << i << " = " << got[i] << ", want -inf";
      continue;
    }
    const double err = std::fabs(double(got[i]) - r.ref[i]);
    if (scale[i] > 0) *worst = std::max(*worst, err / scale[i]);
    if (!(err <= tol * scale[i] + 1e-30))
      return ::testing::AssertionFailure() << "element " << i << ": got " << got[i] << ", want " << r.ref[i]
                                           << " (tolerance " << tol * scale[i] << ")";
  }
  return ::testing::AssertionSuccess();
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  cs.push_back({1, 1, {0}, {1}});
  cs.push_back({1, 200, {0}, {200}});
  // S = 1000 (not a multiple of 64): full, empty, last key only, tile-aligned, almost full.
  cs.push_back({5, 1000, {0, 10, 999, 64, 1}, {1000, 10, 1000, 640, 999}});
  Case causal{9, 777, {}, {}};
  for (int t = 0; t < causal.T; ++t) causal.ks.push_back(0), causal.ke.push_back(causal.S - causal.T + t + 1);
  cs.push_back(causal);
  // Packed sequences, T = 7 → 2 query blocks, so the 79 key tiles are split over CTAs.
  cs.push_back({7, 5000, {0, 0, 0, 2000, 2000, 2000, 2000}, {1000, 1250, 1500, 2700, 3400, 4100, 5000}});
  Case many{66, 2100, {}, {}};
  Rng rng(77);
  for (int t = 0; t < many.T; ++t) {
    int a = rng.integer(0, many.S), b = rng.integer(0, many.S);
    if (t % 11 == 3) b = a;  // empty
    if (t % 13 == 5) a = 0, b = many.S;
    many.ks.push_back(std::min(a, b));
    many.ke.push_back(std::max(a, b));
  }
  cs.push_back(many);
  return cs;
}

#define SKIP_UNLESS_WGMMA(p)                                                                      \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";                                              \
  if (!cuda::detail::use_logits_wgmma(p))                                                         \
  GTEST_SKIP() << "indexer_logits kWgmma does not run here (needs sm_90 + sm_90a code); kAuto runs kMma"

IndexerParams probe_params() {
  static uint8_t dummy alignas(16)[16];  // host pointers suffice: use_logits_wgmma reads no data
  IndexerParams p;
  p.HI = kHI;
  p.DI = kDI;
  p.precision = Precision::kFp8;
  p.q = dummy;
  p.k = dummy;
  return p;
}

constexpr cuda::Variant kWgmma = cuda::Variant::kWgmma, kMma = cuda::Variant::kMma;

TEST(CudaIndexerWgmma, ExactDotsMatchFp64AndMma) {
  SKIP_UNLESS_WGMMA(probe_params());
  uint64_t seed = 900;
  for (const Case& c : cases()) {
    const Data d = exact_dot_data(c, seed++);
    const Ref r = reference(c, d);
    const std::vector<float> wg = run(c, d, kWgmma), again = run(c, d, kWgmma);
    const std::vector<float> mma = run(c, d, kMma);
    double worst = 0, worst2 = 0;
    EXPECT_TRUE(within(wg, r, r.act, kEpilogueRel, &worst)) << "wgmma, T " << c.T << " S " << c.S;
    EXPECT_TRUE(within(mma, r, r.act, kEpilogueRel, &worst2)) << "mma, T " << c.T << " S " << c.S;
    EXPECT_TRUE(bitwise_equal(wg.data(), again.data(), wg.size())) << "wgmma rerun differs, T " << c.T << " S " << c.S;
    std::printf("[ exact dots ] T %d S %d: max |wgmma - ref| / act = %.3g (mma %.3g, bound %.3g)\n", c.T, c.S, worst,
                worst2, kEpilogueRel);
    // Every tuning configuration: the same per-element arithmetic, and with exact dots nothing is
    // left to the tensor core's accumulation, so the bits must match the default's.
    for (int cfg = 1;; ++cfg) {
      IndexerParams none;
      if (cuda::detail::run_logits_wgmma_config(none, nullptr, nullptr, cfg) == nullptr) break;  // T = 0: no launch
      const std::vector<float> other = run(c, d, kWgmma, cfg);
      EXPECT_TRUE(bitwise_equal(wg.data(), other.data(), wg.size())) << "config " << cfg << ", T " << c.T;
    }
  }
}

TEST(CudaIndexerWgmma, QuantizedNormalsMatchFp64AndMma) {
  SKIP_UNLESS_WGMMA(probe_params());
  uint64_t seed = 950;
  for (const Case& c : cases()) {
    if (c.T * int64_t(c.S) < 1000) continue;  // the exact-dot test covers the tiny shapes
    const Data d = quantized_normal_data(c, seed++);
    const Ref r = reference(c, d);
    const std::vector<float> wg = run(c, d, kWgmma), again = run(c, d, kWgmma);
    const std::vector<float> mma = run(c, d, kMma);
    double worst = 0, worst2 = 0;
    EXPECT_TRUE(within(wg, r, r.mag, kFp8AccumRel, &worst)) << "wgmma, T " << c.T << " S " << c.S;
    EXPECT_TRUE(bitwise_equal(wg.data(), again.data(), wg.size())) << "wgmma rerun differs, T " << c.T << " S " << c.S;
    // wgmma vs mma: both within their bounds of the reference → within the sum of the bounds.
    for (size_t i = 0; i < wg.size(); ++i) {
      if (std::isinf(r.ref[i])) {
        ASSERT_EQ(wg[i], mma[i]) << "element " << i;
        continue;
      }
      worst2 = std::max(worst2, std::fabs(double(wg[i]) - mma[i]) / std::max(r.mag[i], 1e-300));
      ASSERT_LE(std::fabs(double(wg[i]) - mma[i]), 2 * kFp8AccumRel * r.mag[i]) << "wgmma vs mma, element " << i;
    }
    std::printf("[ normals ] T %d S %d: max |wgmma - ref| / mag = %.3g, max |wgmma - mma| / mag = %.3g (bound %.3g)\n",
                c.T, c.S, worst, worst2, kFp8AccumRel);
    for (int cfg = 1;; ++cfg) {  // every tuning configuration: within the bound; same bits reported
      IndexerParams none;
      if (cuda::detail::run_logits_wgmma_config(none, nullptr, nullptr, cfg) == nullptr) break;
      const std::vector<float> other = run(c, d, kWgmma, cfg);
      EXPECT_TRUE(within(other, r, r.mag, kFp8AccumRel, &worst)) << "config " << cfg << ", T " << c.T << " S " << c.S;
      std::printf("[ normals ]   config %d %s config 0\n", cfg,
                  bitwise_equal(wg.data(), other.data(), wg.size()) ? "==" : "!=");
    }
  }
}

TEST(CudaIndexerWgmma, BadArgumentsThrowBeforeWriting) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Case c{2, 70, {0, 5}, {70, 60}};
  const Data d = exact_dot_data(c, 5);
  const Fp8IndexerDevice in(c.T, c.S, d, c.ks, c.ke);
  std::vector<float> out(size_t(c.T) * c.S, 3.0f);
  DeviceBuffer<float> dout(out.data(), out.size());
  IndexerParams p = in.p;
  p.q = nullptr;  // the bad argument
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_logits(p, dout.data(), nullptr, kWgmma); },
                            {"indexer_logits", "q is null"}));
  std::vector<float> back(out.size());
  dout.download(back.data(), "logits");
  EXPECT_EQ(back, out) << "output touched before the throw";
}

// kWgmma takes kFp8, HI = 64, DI = 128 and 16-byte aligned q / k on an sm_90 device: asked for on
// other inputs it is a dsa::Error naming the op, the variant and the reason (indexer_logits and
// indexer_topk alike, before anything is written), on any GPU. kAuto runs kMma there for e4m3 inputs
// (where kMma runs), kExact for fp32 ones.
TEST(CudaIndexerWgmma, UnsupportedInputsAreNamedErrors) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto why_not = [](const IndexerParams& p, cuda::Variant v, const char* op) -> std::string {
    try {
      cuda::resolve_variant(p, v, op);
      return "";
    } catch (const Error& e) {
      return e.what();
    }
  };
  IndexerParams heads32 = probe_params();
  heads32.HI = 32;
  IndexerParams fp32 = probe_params();
  fp32.precision = Precision::kFp32;
  for (const char* op : {"indexer_logits", "indexer_topk"}) {
    SCOPED_TRACE(op);
    EXPECT_TRUE(
        throws_naming([&] { cuda::resolve_variant(heads32, kWgmma, op); }, {op, "wgmma", "HI = 64", "HI = 32"}));
    EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(fp32, kWgmma, op); }, {op, "wgmma", "kFp8"}));
    EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(fp32, kMma, op); }, {op, "mma", "kFp8"}));
    EXPECT_EQ(cuda::resolve_variant(fp32, cuda::Variant::kAuto, op), cuda::Variant::kExact);
    const cuda::Variant fallback = why_not(heads32, kMma, op).empty() ? kMma : cuda::Variant::kExact;
    EXPECT_EQ(cuda::resolve_variant(heads32, cuda::Variant::kAuto, op), fallback) << why_not(heads32, kMma, op);
  }
  // Misaligned q on device data: the call throws before writing; kAuto does not pick kWgmma.
  const Case c{2, 70, {0, 5}, {70, 60}};
  Data d = exact_dot_data(c, 6);
  d.q.insert(d.q.begin(), uint8_t(0));   // q starts at byte 1 of the device copy
  const Fp8IndexerDevice in(c.T, c.S, d, c.ks, c.ke);
  IndexerParams p = in.p;
  p.q = in.q.data() + 1;
  std::vector<float> out(size_t(c.T) * c.S, 3.0f), back(out.size());
  DeviceBuffer<float> dout(out.data(), out.size());
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_logits(p, dout.data(), nullptr, kWgmma); },
                            {"indexer_logits", "wgmma", "16-byte aligned"}));
  const int K = 8;
  std::vector<int32_t> idx(size_t(c.T) * K, 7), idx_back(idx.size());
  DeviceBuffer<int32_t> didx(idx.data(), idx.size());
  EXPECT_TRUE(throws_naming([&] { cuda::indexer_topk(p, K, didx.data(), nullptr, 0, nullptr, kWgmma); },
                            {"indexer_topk", "wgmma", "16-byte aligned"}));
  EXPECT_NE(cuda::resolve_variant(p, cuda::Variant::kAuto), kWgmma);
  sync_and_check("indexer_logits (refused variant)");
  dout.download(back.data(), "logits");
  EXPECT_EQ(back, out) << "logits written before the throw";
  didx.download(idx_back.data(), "indices");
  EXPECT_EQ(idx_back, idx) << "indices written before the throw";
}

}  // namespace
}  // namespace dsa::test
