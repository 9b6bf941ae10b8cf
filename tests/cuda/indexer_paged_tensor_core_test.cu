// indexer_paged_tensor_core_test.cu — the tensor-core variants of indexer_logits_paged: kWgmma (sm_90a;
// src/cuda/indexer_logits_paged_wgmma.cu) and kMma (sm_89+; src/cuda/indexer_logits_paged_mma.cu),
// against a float64 reference, against the kExact variant and against indexer_logits of the same
// variant on the gathered keys. Each test runs the variants that run here (skipped without a GPU or
// without either: asking for one that cannot run is a dsa::Error, which the last test checks).
//
// The table row (tests/op_decode.cpp, classes cuda_mma and cuda_wgmma) covers the op's contract on
// CPU-valid data; this file adds what only the device sees and what pins the kernels' layouts:
//   * exact dots: q, k ∈ {0, ±1/2, ±1, ±2} (e4m3 codes): every partial sum of a dot is exact in any
//     accumulator of ≥ 12 bits, so only the fp32 epilogue rounds (HI fmaf / adds + the scale product):
//     |got − ref| ≤ 2·(HI + 4)·u·act (first order, ×2 margin), act = s·Σ_h |w·ReLU(u_h)|;
//   * paged ≡ contiguous: a paged variant shares its per-element arithmetic with indexer_logits of the
//     same variant (indexer_wgmma_tile.cuh, indexer_mma_tile.cuh). With exact dots the accumulators
//     agree whatever the MMA shape, so both variants must match their contiguous kernel BIT FOR BIT;
//     on quantised normals kMma must too (the same mma.sync operands in the same order), kWgmma only
//     reports it (its next_n = 1 tile is m64n64, the contiguous kernel's m64n128);
//   * quantised normals (the production path): kFp8AccumRel·mag (test_util.h) plus the fp32 terms;
//   * device-only data rules (the CPU refuses such data): a page id outside [0, num_pages) inside a
//     context gives −inf for its 64 keys, in every variant; table entries past a request's pages are
//     garbage and never read; unused pages and the keys past a row's length are NaN bytes;
//   * a decode-sized shape (B = 64, next_n = 2, mixed lengths up to 1500) against kExact;
//   * every output element starts as NaN (unwritten → fail), device guards, bitwise reruns.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/indexer_logits_paged_mma.cuh"
#include "cuda/indexer_logits_paged_wgmma.cuh"
#include "dsa/cuda_ops.h"
#include "test_util.h"

namespace dsa::test {
namespace {

constexpr int kHI = 64, kDI = kIndexerKeyDim, kPage = kCachePageTokens;
constexpr size_t kPageBytes = size_t(kPage) * kIndexerRecordBytes;   // 8448
constexpr size_t kScaleOffset = size_t(kPage) * kDI;                 // 8192
constexpr double kU = 1.0 / (1 << 24);                               // fp32 unit roundoff
constexpr double kEpilogueRel = 2.0 * (kHI + 4) * kU;                // exact-dot data, see above
constexpr double kFp32Rel = (kDI + kHI + 4) * kU;                    // kExact's bound (op_decode.cpp)
constexpr uint8_t kNanByte = 0xFF;                                   // NaN as e4m3 and as fp32
constexpr cuda::Variant kWgmma = cuda::Variant::kWgmma, kMma = cuda::Variant::kMma, kExact = cuda::Variant::kExact;

enum class Data { kExactDots, kNormals };

struct Case {
  const char* name;
  int next_n;
  std::vector<int> lens;        // tokens in each request's cache (B = lens.size())
  bool mtp_rule;                // context_lens = L − next_n + n + 1; else random in [0, L]
  int extra_ctx;                // max_context_len = max L + extra_ctx
  std::vector<std::pair<int, int>> bad_pages;   // (request, logical page) given an invalid id
  uint64_t seed;
};

struct Inputs {
  int B = 0, rows = 0, max_ctx = 0, num_pages = 0, max_blocks = 0;
  std::vector<int32_t> table, lens;     // [B, max_blocks], [rows]
  std::vector<uint8_t> cache, q;
  std::vector<float> w;
  std::vector<bool> bad;                // [B, max_blocks]: the entry is an invalid page id
  int32_t page(int b, int64_t j) const { return table[size_t(b) * max_blocks + j / kPage]; }
  bool page_bad(int b, int64_t j) const { return bad[size_t(b) * max_blocks + j / kPage]; }
};

uint8_t data_code(Data kind, Rng& rng) {
  if (kind == Data::kExactDots) {
    const float levels[] = {0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 2.0f, -2.0f};
    return cpu::fp8_e4m3_from_float(levels[rng.integer(0, 6)]);
  }
  return 0;  // unused
}

Inputs make_inputs(const Case& c, Data kind) {
  Rng rng(c.seed);
  Inputs in;
  in.B = int(c.lens.size());
  in.rows = in.B * c.next_n;
  in.max_ctx = *std::max_element(c.lens.begin(), c.lens.end()) + c.extra_ctx;
  int used = 0, widest = 0;
  for (int L : c.lens) {
    used += (L + kPage - 1) / kPage;
    widest = std::max(widest, (L + kPage - 1) / kPage);
  }
  in.num_pages = used + 5;                      // 5 unused pages, NaN bytes
  in.max_blocks = widest + 2;
  std::vector<int32_t> pool(in.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng.engine());
  in.table.resize(size_t(in.B) * in.max_blocks);
  in.bad.assign(in.table.size(), false);
  for (auto& t : in.table) t = rng.integer(-1000000, 1000000);   // garbage past each request's pages
  size_t next = 0;
  for (int b = 0; b < in.B; ++b)
    for (int i = 0; i < (c.lens[b] + kPage - 1) / kPage; ++i) in.table[size_t(b) * in.max_blocks + i] = pool[next++];
  for (auto [b, i] : c.bad_pages) {   // device-only: an invalid id inside the context
    in.table[size_t(b) * in.max_blocks + i] = (i % 2) ? in.num_pages + 7 : -3;
    in.bad[size_t(b) * in.max_blocks + i] = true;
  }
  in.cache.assign(size_t(in.num_pages) * kPageBytes, kNanByte);
  for (int b = 0; b < in.B; ++b) {
    const int L = c.lens[b];
    if (kind == Data::kNormals) {   // the model's path: fp32 keys → indexer_cache_pack
      std::vector<float> k = rng.normal_vec(size_t(L) * kDI);
      std::vector<uint8_t> own(size_t((L + kPage - 1) / kPage) * kPageBytes);
      IndexerCacheParams pack;
      pack.N = L;
      pack.format = ScaleFormat::kUe8m0;
      pack.k = k.data();
      pack.cache = own.data();
      cpu::indexer_cache_pack(pack);
      for (int i = 0; i < (L + kPage - 1) / kPage; ++i)
        if (!in.page_bad(b, int64_t(i) * kPage))
          std::memcpy(&in.cache[size_t(in.page(b, int64_t(i) * kPage)) * kPageBytes], &own[size_t(i) * kPageBytes],
                      kPageBytes);
    } else {
      for (int64_t j = 0; j < L; ++j) {
        if (in.page_bad(b, j)) continue;
        uint8_t* page = &in.cache[size_t(in.page(b, j)) * kPageBytes];
        for (int d = 0; d < kDI; ++d) page[(j % kPage) * kDI + d] = data_code(kind, rng);
        const float s = rng.uniform(0.25f, 2.0f);
        std::memcpy(page + kScaleOffset + (j % kPage) * 4, &s, 4);
      }
    }
  }
  in.q.resize(size_t(in.rows) * kHI * kDI);
  in.w = rng.normal_vec(size_t(in.rows) * kHI);
  if (kind == Data::kNormals) {   // q quantised as production does (ue8m0 scales folded into w)
    const std::vector<float> qf = rng.normal_vec(in.q.size());
    std::vector<float> wf = in.w, kdummy(kDI, 1.0f), wq(in.w.size()), ks(1);
    std::vector<uint8_t> k8(kDI);
    cpu::indexer_quantize_fp8(IndexerQuantizeParams{in.rows, 1, kHI, kDI, ScaleFormat::kUe8m0, qf.data(), kdummy.data(),
                                                    wf.data(), in.q.data(), k8.data(), ks.data(), wq.data()});
    in.w = wq;
  } else {
    for (auto& v : in.q) v = data_code(kind, rng);
  }
  in.lens.resize(in.rows);
  for (int b = 0; b < in.B; ++b)
    for (int n = 0; n < c.next_n; ++n)
      in.lens[size_t(b) * c.next_n + n] = c.mtp_rule ? std::max(0, c.lens[b] - c.next_n + n + 1) : rng.integer(0, c.lens[b]);
  return in;
}

// fp64 reference (−inf where the contract or a bad page says so), act and mag error scales.
struct Ref {
  std::vector<double> ref, act, mag;
};
Ref reference(const Inputs& in, int next_n) {
  const size_t n = size_t(in.rows) * in.max_ctx;
  Ref r{std::vector<double>(n, -std::numeric_limits<double>::infinity()), std::vector<double>(n, 0.0),
        std::vector<double>(n, 0.0)};
  std::vector<double> e4m3(256);
  for (int v = 0; v < 256; ++v) e4m3[v] = cpu::fp8_e4m3_to_float(uint8_t(v));
  for (int row = 0; row < in.rows; ++row) {
    const int b = row / next_n;
    for (int64_t j = 0; j < in.lens[row]; ++j) {
      if (in.page_bad(b, j)) continue;
      const uint8_t* page = &in.cache[size_t(in.page(b, j)) * kPageBytes];
      const uint8_t* k = page + (j % kPage) * kDI;
      float s;
      std::memcpy(&s, page + kScaleOffset + (j % kPage) * 4, 4);
      double acc = 0, act = 0, mag = 0;
      for (int h = 0; h < kHI; ++h) {
        const uint8_t* qh = &in.q[(size_t(row) * kHI + h) * kDI];
        double u = 0, ua = 0;
        for (int d = 0; d < kDI; ++d) {
          u += e4m3[qh[d]] * e4m3[k[d]];
          ua += std::fabs(e4m3[qh[d]] * e4m3[k[d]]);
        }
        const double wv = in.w[size_t(row) * kHI + h];
        acc += wv * std::max(u, 0.0);
        act += std::fabs(wv * std::max(u, 0.0));
        mag += std::fabs(wv) * ua;
      }
      const size_t i = size_t(row) * in.max_ctx + j;
      r.ref[i] = s * acc;
      r.act[i] = s * act;
      r.mag[i] = s * mag;
    }
  }
  return r;
}

// Runs variant v on device copies; the output body starts as NaN (an unwritten element fails).
std::vector<float> run(const Inputs& in, int next_n, cuda::Variant v) {
  DeviceBuffer<uint8_t> q(in.q.data(), in.q.size()), cache(in.cache.data(), in.cache.size());
  DeviceBuffer<float> w(in.w.data(), in.w.size());
  DeviceBuffer<int32_t> lens(in.lens.data(), in.lens.size()), table(in.table.data(), in.table.size());
  std::vector<float> out(size_t(in.rows) * in.max_ctx, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer<float> dout(out.data(), out.size());
  PagedIndexerParams p;
  p.B = in.B;
  p.next_n = next_n;
  p.HI = kHI;
  p.num_pages = in.num_pages;
  p.max_blocks = in.max_blocks;
  p.max_context_len = in.max_ctx;
  p.q_fp8 = q.data();
  p.cache = cache.data();
  p.w = w.data();
  p.context_lens = lens.data();
  p.block_table = table.data();
  cuda::indexer_logits_paged(p, dout.data(), nullptr, v);
  sync_and_check("indexer_logits_paged");
  dout.download(out.data(), "logits");
  return out;
}

// −inf exactly where ref is −inf; |got − ref| ≤ rel·scale elsewhere. Reports the worst error / scale.
::testing::AssertionResult within(const std::vector<float>& got, const Ref& r, const std::vector<double>& scale,
                                  double rel, double* worst) {
  *worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(r.ref[i])) {
      if (!(std::isinf(got[i]) && got[i] < 0))
        return ::testing::AssertionFailure() << "element " << i << " = " << got[i] << ", want -inf";
      continue;
    }
    const double err = std::fabs(double(got[i]) - r.ref[i]);
    if (scale[i] > 0) *worst = std::max(*worst, err / scale[i]);
    if (!(err <= rel * scale[i] + 1e-30))
      return ::testing::AssertionFailure() << "element " << i << ": got " << got[i] << ", want " << r.ref[i]
                                           << " (tolerance " << rel * scale[i] << ")";
  }
  return ::testing::AssertionSuccess();
}

// indexer_logits (variant v) of request b's gathered keys (ks = 0, ke = the row lengths,
// k_scale per key); a bad page's keys are zero codes with scale 1 (the paged result there is −inf and
// is not compared). Returns [next_n, L] logits.
std::vector<float> contiguous(const Inputs& in, int next_n, int b, int L, cuda::Variant v) {
  std::vector<uint8_t> k(size_t(std::max(L, 1)) * kDI, 0);
  std::vector<float> ksc(std::max(L, 1), 1.0f);
  for (int64_t j = 0; j < L; ++j) {
    if (in.page_bad(b, j)) continue;
    const uint8_t* page = &in.cache[size_t(in.page(b, j)) * kPageBytes];
    std::memcpy(&k[j * kDI], page + (j % kPage) * kDI, kDI);
    std::memcpy(&ksc[j], page + kScaleOffset + (j % kPage) * 4, 4);
  }
  std::vector<int32_t> ks(next_n, 0), ke(in.lens.begin() + size_t(b) * next_n, in.lens.begin() + size_t(b + 1) * next_n);
  DeviceBuffer<uint8_t> dq(in.q.data() + size_t(b) * next_n * kHI * kDI, size_t(next_n) * kHI * kDI), dk(k.data(), k.size());
  DeviceBuffer<float> dw(in.w.data() + size_t(b) * next_n * kHI, size_t(next_n) * kHI), dks(ksc.data(), ksc.size());
  DeviceBuffer<int32_t> dks_(ks.data(), ks.size()), dke(ke.data(), ke.size());
  std::vector<float> out(size_t(next_n) * L, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer<float> dout(out.data(), out.size());
  const IndexerParams p{next_n, L, kHI, kDI, Precision::kFp8, dq.data(), dk.data(), dks.data(), dw.data(),
                        dks_.data(), dke.data()};
  cuda::indexer_logits(p, dout.data(), nullptr, v);
  sync_and_check("indexer_logits");
  dout.download(out.data(), "logits");
  return out;
}

std::vector<Case> cases() {
  return {
      {"context 1", 1, {1}, true, 0, {}, 41},
      {"MTP lens ±1 around pages, an L = 1 request", 2, {63, 64, 65, 1, 129}, true, 2, {}, 42},
      {"2-D lens next_n 1, rows padded past the last page", 1, {300, 7, 191, 128}, false, 200, {}, 43},
      {"2-D lens next_n 2, invalid page ids inside contexts", 2, {700, 450, 90}, false, 64, {{0, 3}, {1, 0}, {2, 1}}, 44},
      {"long rows split over CTAs", 2, {5000, 1, 2600}, true, 5, {{0, 77}}, 45},
  };
}

PagedIndexerParams paged_probe(int HI = kHI) {
  static uint8_t dummy alignas(16)[16];
  PagedIndexerParams p;
  p.B = 1;
  p.next_n = 2;
  p.HI = HI;
  p.q_fp8 = dummy;
  p.cache = dummy;
  return p;
}

// Whether variant v runs p here (resolve_variant's reason otherwise, printed).
bool runs(const PagedIndexerParams& p, cuda::Variant v) {
  try {
    cuda::resolve_variant(p, v);
    return true;
  } catch (const Error& e) {
    std::printf("[ skipped ] %s: %s\n", cuda::variant_name(v), e.what());
    return false;
  }
}

// The tensor-core variants that run the V3.2 shape here (probed once).
const std::vector<cuda::Variant>& tensor_variants() {
  static const std::vector<cuda::Variant> here = [] {
    std::vector<cuda::Variant> v;
    if (!have_gpu()) return v;
    for (cuda::Variant c : {kWgmma, kMma})
      if (runs(paged_probe(), c)) v.push_back(c);
    return v;
  }();
  return here;
}

#define SKIP_UNLESS_TENSOR_CORES()                                                                    \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";                                                  \
  if (tensor_variants().empty()) GTEST_SKIP() << "no tensor-core variant of indexer_logits_paged runs here"

// paged ≡ indexer_logits of variant v on the gathered keys wherever the key is visible: bitwise
// (must_match) or reported.
void compare_contiguous(const Inputs& in, const Case& c, const std::vector<float>& got, cuda::Variant v,
                        bool must_match) {
  size_t differ = 0, compared = 0;
  for (int b = 0; b < in.B; ++b) {
    const int L = c.lens[b];
    const std::vector<float> flat = contiguous(in, c.next_n, b, L, v);
    for (int n = 0; n < c.next_n; ++n) {
      const size_t row = size_t(b) * c.next_n + n;
      for (int64_t j = 0; j < L; ++j) {
        if (in.page_bad(b, j) || j >= in.lens[row]) continue;
        const float a = flat[size_t(n) * L + j], g = got[row * in.max_ctx + j];
        ++compared;
        if (bitwise_equal(&a, &g, 1)) continue;
        ++differ;
        if (must_match)
          FAIL() << cuda::variant_name(v) << ": request " << b << " row " << n << " key " << j << ": paged " << g
                 << " vs indexer_logits " << a;
      }
    }
  }
  std::printf("[ paged vs indexer_logits ] %s %s: %zu of %zu visible logits differ in bits\n", c.name,
              cuda::variant_name(v), differ, compared);
}

TEST(CudaIndexerPagedTensorCore, ExactDotsMatchFp64AndContiguousBitwise) {
  SKIP_UNLESS_TENSOR_CORES();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Inputs in = make_inputs(c, Data::kExactDots);
    const Ref r = reference(in, c.next_n);
    const std::vector<float> ex = run(in, c.next_n, kExact);
    double worst_ex = 0;
    EXPECT_TRUE(within(ex, r, r.mag, kFp32Rel, &worst_ex)) << "exact";
    for (cuda::Variant v : tensor_variants()) {
      SCOPED_TRACE(cuda::variant_name(v));
      const std::vector<float> got = run(in, c.next_n, v), again = run(in, c.next_n, v);
      double worst = 0;
      EXPECT_TRUE(within(got, r, r.act, kEpilogueRel, &worst));
      EXPECT_TRUE(bitwise_equal(got.data(), again.data(), got.size())) << "rerun differs";
      std::printf("[ exact dots ] %s %s: max |got - ref| / act = %.3g (bound %.3g)\n", c.name, cuda::variant_name(v),
                  worst, kEpilogueRel);
      compare_contiguous(in, c, got, v, /*must_match=*/true);
    }
  }
}

TEST(CudaIndexerPagedTensorCore, QuantizedNormalsMatchFp64AndExact) {
  SKIP_UNLESS_TENSOR_CORES();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Inputs in = make_inputs(c, Data::kNormals);
    const Ref r = reference(in, c.next_n);
    const std::vector<float> ex = run(in, c.next_n, kExact);
    double worst_ex = 0;
    EXPECT_TRUE(within(ex, r, r.mag, kFp32Rel, &worst_ex)) << "exact";
    for (cuda::Variant v : tensor_variants()) {
      SCOPED_TRACE(cuda::variant_name(v));
      const std::vector<float> got = run(in, c.next_n, v), again = run(in, c.next_n, v);
      double worst = 0, worst_pair = 0;
      EXPECT_TRUE(within(got, r, r.mag, kFp8AccumRel + kFp32Rel, &worst));
      EXPECT_TRUE(bitwise_equal(got.data(), again.data(), got.size())) << "rerun differs";
      // vs kExact: both within their bounds of the reference → within the sum of the bounds, and −inf
      // at the same places.
      for (size_t i = 0; i < got.size(); ++i) {
        if (std::isinf(got[i]) || std::isinf(ex[i])) {
          ASSERT_EQ(got[i], ex[i]) << "element " << i;
          continue;
        }
        worst_pair = std::max(worst_pair, std::fabs(double(got[i]) - ex[i]) / std::max(r.mag[i], 1e-300));
        ASSERT_LE(std::fabs(double(got[i]) - ex[i]), (kFp8AccumRel + 2 * kFp32Rel) * r.mag[i] + 1e-30)
            << "vs exact, element " << i;
      }
      std::printf("[ normals ] %s %s: max |got - ref| / mag = %.3g, |exact - ref| / mag = %.3g, |got - exact| / mag = "
                  "%.3g (bound %.3g)\n",
                  c.name, cuda::variant_name(v), worst, worst_ex, worst_pair, kFp8AccumRel + kFp32Rel);
      compare_contiguous(in, c, got, v, /*must_match=*/v == kMma);
    }
  }
}

// A decode-sized call: 64 requests × next_n 2 of mixed lengths (MTP rule), so the grid holds many
// CTAs per request and short requests finish early; kWgmma against kExact and the reference.
TEST(CudaIndexerPagedTensorCore, DecodeBatchMatchesExact) {
  SKIP_UNLESS_TENSOR_CORES();
  Rng rng(46);
  Case c{"B = 64, next_n = 2, lengths 1..1500", 2, {}, true, 17, {}, 47};
  for (int b = 0; b < 64; ++b) c.lens.push_back(b % 9 == 0 ? rng.integer(1, 70) : rng.integer(1, 1500));
  const Inputs in = make_inputs(c, Data::kNormals);
  const Ref r = reference(in, c.next_n);
  const std::vector<float> ex = run(in, c.next_n, kExact);
  double worst_ex = 0;
  EXPECT_TRUE(within(ex, r, r.mag, kFp32Rel, &worst_ex)) << "exact";
  for (cuda::Variant v : tensor_variants()) {
    SCOPED_TRACE(cuda::variant_name(v));
    const std::vector<float> got = run(in, c.next_n, v);
    double worst = 0;
    EXPECT_TRUE(within(got, r, r.mag, kFp8AccumRel + kFp32Rel, &worst));
    for (int rep = 0; rep < 3; ++rep)
      EXPECT_TRUE(bitwise_equal(got.data(), run(in, c.next_n, v).data(), got.size())) << "rerun " << rep << " differs";
    std::printf("[ decode batch ] %s: max |got - ref| / mag = %.3g, |exact - ref| / mag = %.3g\n", cuda::variant_name(v),
                worst, worst_ex);
  }
}

// kWgmma takes HI = 64 on an sm_90 device running sm_90a code, kMma HI a multiple of 16 with
// next_n·HI ≤ 128 on sm_89+ (both: next_n 1 or 2, q_fp8 and cache 16-byte aligned). Asked for on
// other inputs a variant is a dsa::Error naming the op, the variant and the reason, before anything is
// written (checked on any GPU); kAuto then takes the next variant that runs.
TEST(CudaIndexerPagedTensorCore, UnsupportedInputsAreNamedErrors) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  constexpr const char* op = "indexer_logits_paged";
  const bool wgmma_here = cuda::detail::use_paged_logits_wgmma(paged_probe());
  const bool mma_here = cuda::detail::use_paged_logits_mma(paged_probe());
  const PagedIndexerParams heads32 = paged_probe(32), heads24 = paged_probe(24);
  PagedIndexerParams heads128 = paged_probe(128);   // next_n = 2: 256 (row, head) pairs
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(heads32, kWgmma); }, {op, "wgmma", "HI = 64", "HI = 32"}));
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(heads24, kMma); }, {op, "mma", "multiple of 16", "HI = 24"}));
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(heads128, kMma); }, {op, "mma", "next_n·HI", "HI = 128"}));
  EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(), cuda::Variant::kCublas); },
                            {op, "no variant", "cublas"}));
  EXPECT_EQ(cuda::resolve_variant(heads24, cuda::Variant::kAuto), kExact);
  const bool tc_default = cuda::kPagedTensorCoreDefault;   // kAuto may take a tensor-core variant
  EXPECT_EQ(cuda::resolve_variant(heads32, cuda::Variant::kAuto), tc_default && mma_here ? kMma : kExact);
  EXPECT_EQ(cuda::resolve_variant(heads128, kExact), kExact);
  heads128.next_n = 1;   // 128 pairs: kMma takes it
  EXPECT_EQ(cuda::resolve_variant(heads128, cuda::Variant::kAuto), tc_default && mma_here ? kMma : kExact);
  if (!wgmma_here) EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(), kWgmma); }, {op, "wgmma", "sm_90"}));
  if (!mma_here) EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(paged_probe(), kMma); }, {op, "mma", "sm_89"}));
  EXPECT_EQ(cuda::resolve_variant(paged_probe(), cuda::Variant::kAuto),
            !tc_default ? kExact : wgmma_here ? kWgmma : mma_here ? kMma : kExact);

  // A cache that starts at byte 1 of its device copy: each tensor-core variant is refused before
  // anything is written, and kAuto runs kExact.
  const Case c{"misaligned", 2, {70, 5}, true, 3, {}, 48};
  const Inputs in = make_inputs(c, Data::kExactDots);
  std::vector<uint8_t> shifted(in.cache.size() + 1, 0);
  std::memcpy(shifted.data() + 1, in.cache.data(), in.cache.size());
  DeviceBuffer<uint8_t> q(in.q.data(), in.q.size()), cache(shifted.data(), shifted.size());
  DeviceBuffer<float> w(in.w.data(), in.w.size());
  DeviceBuffer<int32_t> lens(in.lens.data(), in.lens.size()), table(in.table.data(), in.table.size());
  std::vector<float> out(size_t(in.rows) * in.max_ctx, 3.0f), back(out.size());
  DeviceBuffer<float> dout(out.data(), out.size());
  PagedIndexerParams p;
  p.B = in.B;
  p.next_n = c.next_n;
  p.HI = kHI;
  p.num_pages = in.num_pages;
  p.max_blocks = in.max_blocks;
  p.max_context_len = in.max_ctx;
  p.q_fp8 = q.data();
  p.cache = cache.data() + 1;
  p.w = w.data();
  p.context_lens = lens.data();
  p.block_table = table.data();
  for (cuda::Variant v : {kWgmma, kMma}) {
    if (!(v == kWgmma ? wgmma_here : mma_here)) continue;
    EXPECT_TRUE(throws_naming([&] { cuda::indexer_logits_paged(p, dout.data(), nullptr, v); },
                              {op, cuda::variant_name(v), "16-byte aligned"}));
  }
  EXPECT_EQ(cuda::resolve_variant(p, cuda::Variant::kAuto), kExact);
  sync_and_check("indexer_logits_paged (refused variant)");
  dout.download(back.data(), "logits");
  EXPECT_EQ(back, out) << "output touched before the throw";
}

}  // namespace
}  // namespace dsa::test
