// cpu_isa.cpp — the CPU backend's instruction-set paths (include/dsa/cpu_isa.h) against each other.
//
// ctest also runs the whole op table once per path (tests/CMakeLists.txt, DSA_CPU_ISA=generic|avx2|
// avx512|neon); a path this CPU lacks makes that run exit with 77, which ctest reports as skipped. The
// tests below switch paths inside one process and compare their outputs on the same inputs:
//   * bf16 / fp8 indexer: every product is exact in fp32, so FMA or not, every path gives the same
//     bits (logits and top-k indices);
//   * fp32 indexer: avx2 ≡ avx512 (≡ neon on ARM64) bitwise (same operations in the same order, FMA
//     in all); the generic path (no FMA: each product rounded) differs by at most its rounding, bounded below.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/isa_testing.h"
#include "dsa/cpu_isa.h"
#include "dsa/ops.h"

namespace {

using dsa::cpu::Isa;

// A valid DSA_CPU_ISA that this CPU lacks: the run is skipped (exit 77), before any test starts.
const bool kSkipUnsupported = [] {
  const char* env = std::getenv("DSA_CPU_ISA");
  if (env == nullptr) return false;
  for (Isa i : dsa::cpu::kAllIsas)
    if (std::strcmp(env, dsa::cpu::isa_name(i)) == 0 && !dsa::cpu::isa_supported(i)) {
      std::fprintf(stderr, "DSA_CPU_ISA=%s: this CPU lacks it (best path %s); skipped\n", env,
                   dsa::cpu::isa_name(dsa::cpu::isa_best()));
      std::exit(77);
    }
  return true;
}();

std::vector<Isa> available_paths() {
  std::vector<Isa> v;
  for (Isa i : dsa::cpu::kAllIsas)
    if (dsa::cpu::isa_supported(i)) v.push_back(i);
  return v;
}

// Runs fn with the given path, then restores the process's path.
template <class Fn>
void with_isa(Isa isa, Fn&& fn) {
  const Isa before = dsa::cpu::detail::set_isa_for_testing(isa);
  fn();
  dsa::cpu::detail::set_isa_for_testing(before);
}

struct Shape {
  int T, S, HI, DI;
};

struct Inputs {
  Shape sh;
  std::vector<float> q, k, w, k_scale;
  std::vector<uint16_t> q16, k16;
  std::vector<uint8_t> q8, k8;
  std::vector<int32_t> ks, ke;
  dsa::IndexerParams params(dsa::Precision pr) const {
    dsa::IndexerParams p;
    p.T = sh.T, p.S = sh.S, p.HI = sh.HI, p.DI = sh.DI, p.precision = pr;
    p.w = w.data(), p.ks = ks.data(), p.ke = ke.data();
    if (pr == dsa::Precision::kFp32) p.q = q.data(), p.k = k.data();
    if (pr == dsa::Precision::kBf16) p.q = q16.data(), p.k = k16.data();
    if (pr == dsa::Precision::kFp8) p.q = q8.data(), p.k = k8.data(), p.k_scale = k_scale.data();
    return p;
  }
};

Inputs make_inputs(Shape sh, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Inputs in{sh, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  in.q.resize(size_t(sh.T) * sh.HI * sh.DI);
  in.k.resize(size_t(sh.S) * sh.DI);
  in.w.resize(size_t(sh.T) * sh.HI);
  for (auto* v : {&in.q, &in.k, &in.w})
    for (auto& x : *v) x = nd(gen);
  for (float x : in.q) in.q16.push_back(dsa::cpu::bf16_from_float(x)), in.q8.push_back(dsa::cpu::fp8_e4m3_from_float(x));
  for (float x : in.k) in.k16.push_back(dsa::cpu::bf16_from_float(x)), in.k8.push_back(dsa::cpu::fp8_e4m3_from_float(x));
  std::uniform_int_distribution<int> e(-3, 3);
  for (int s = 0; s < sh.S; ++s) in.k_scale.push_back(std::ldexp(1.0f, e(gen)));
  // Ranges: a causal-like band that ends at different offsets (partial key tiles at both ends),
  // one empty row and one full row.
  for (int t = 0; t < sh.T; ++t) {
    int lo = (t * 7) % std::max(1, sh.S / 3), hi = std::min(sh.S, lo + 1 + (t * 37) % sh.S);
    if (t == 1) lo = hi = sh.S / 2;
    if (t == 2) lo = 0, hi = sh.S;
    in.ks.push_back(lo), in.ke.push_back(hi);
  }
  return in;
}

const Shape kShapes[] = {{37, 300, 16, 64}, {9, 70, 5, 128}, {6, 45, 17, 7}, {5, 129, 1, 1}};
constexpr int kTopK = 16;

struct PathOutput {
  std::vector<float> logits;
  std::vector<int32_t> indices;
};

PathOutput run(const Inputs& in, dsa::Precision pr) {
  PathOutput o;
  const auto p = in.params(pr);
  o.logits.assign(size_t(p.T) * p.S, 0.0f);
  o.indices.assign(size_t(p.T) * kTopK, 0);
  dsa::cpu::indexer_logits(p, o.logits.data());
  dsa::cpu::indexer_topk(p, kTopK, o.indices.data());
  return o;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(CpuIsa, ReportNamesThePath) {
  const std::string r = dsa::cpu::isa_report();
  EXPECT_NE(r.find(std::string("cpu isa: ") + dsa::cpu::isa_name(dsa::cpu::isa())), std::string::npos) << r;
  EXPECT_NE(r.find("indexer_logits"), std::string::npos) << r;
}

TEST(CpuIsa, IndexerPathsAgree) {
  const auto paths = available_paths();
  if (paths.size() == 1) GTEST_SKIP() << "only the generic path on this CPU: nothing to compare against";
  for (const Shape& sh : kShapes) {
    const Inputs in = make_inputs(sh, 1000u + sh.T * 31u + sh.DI);
    for (dsa::Precision pr : {dsa::Precision::kFp32, dsa::Precision::kBf16, dsa::Precision::kFp8}) {
      std::vector<PathOutput> out;
      for (Isa isa : paths) with_isa(isa, [&] { out.push_back(run(in, pr)); });
      for (size_t i = 1; i < paths.size(); ++i) {
        const std::string what = std::string(dsa::cpu::isa_name(paths[i])) + " vs " + dsa::cpu::isa_name(paths[0]) +
                                 ", precision " + std::to_string(int(pr)) + ", HI " + std::to_string(sh.HI) + ", DI " +
                                 std::to_string(sh.DI);
        const bool bitwise = pr != dsa::Precision::kFp32 || paths[0] != Isa::kGeneric;
        if (bitwise) {
          EXPECT_TRUE(same_bits(out[i].logits, out[0].logits)) << what;
          EXPECT_EQ(out[i].indices, out[0].indices) << what;
          continue;
        }
        // fp32, generic (no FMA) vs an FMA path: each path's dot of DI terms is within
        // (DI + 1)·2^-24 · Σ_d |q_d·k_d| of the exact one (one rounding per product in generic, one
        // per add in both), the w product and the HI-term head sum add (HI + 1)·2^-24 of
        // Σ_h |w_h|·|u_h|; twice that bounds the difference of two paths.
        for (int t = 0; t < sh.T; ++t)
          for (int s = in.ks[t]; s < in.ke[t]; ++s) {
            double bound = 0;
            for (int h = 0; h < sh.HI; ++h) {
              double dot_abs = 0;
              for (int d = 0; d < sh.DI; ++d)
                dot_abs += std::fabs(double(in.q[(size_t(t) * sh.HI + h) * sh.DI + d]) * in.k[size_t(s) * sh.DI + d]);
              bound += std::fabs(in.w[size_t(t) * sh.HI + h]) * dot_abs;
            }
            bound *= 2.0 * (sh.DI + sh.HI + 2) * std::ldexp(1.0, -24);
            const size_t at = size_t(t) * sh.S + s;
            ASSERT_LE(std::fabs(double(out[i].logits[at]) - out[0].logits[at]), bound) << what << " t " << t << " s " << s;
          }
      }
      // The FMA paths among themselves are bitwise equal in fp32 too.
      for (size_t i = 1; i < paths.size(); ++i) {
        if (paths[i - 1] != Isa::kGeneric) {
          EXPECT_TRUE(same_bits(out[i].logits, out[i - 1].logits));
        }
      }
    }
  }
}

}  // namespace
