// attention_wgmma_test.cu — sparse_attention_forward variant kWgmma (Hopper bf16 wgmma, sm_90a), which
// is not a row of the fp32 test table: its operands are rounded to bf16, so it is checked here against
// a float64 reference with the bf16 tolerance of the kMma test (attention_bf16_test.cu), on the shapes
// it takes (Dqk 576, Dv 512, H ∈ {64, 128}) with the corner cases of its 64-key tiles: K a multiple of
// the tile, ±1 around it, a long row (the 3-slot key-id ring wraps), S < K (duplicates), T = 1, K = 1,
// −1 and ≥ S indices, topk_length (0, short, K, > K clamped), an all-invalid row; guards, poisoned
// outputs fully written, bitwise reruns, the workspace query and its named error. Also, on any GPU:
//   * the bf16-input path (dtype kBF16) equals the fp32-input path holding the same (bf16-rounded)
//     values bit for bit, for the tensor-core forwards (kWgmma, kMma), the decode (kMma, kExact) and
//     the backward (kCublas, kExact);
//   * kAuto's choice by dtype: bf16 inputs at the V3.2 shape run the fastest tensor-core variant of
//     the device, fp32 inputs run kExact;
//   * a named tensor-core variant on a shape it does not take (H = 32) is a dsa::Error naming the op,
//     the variant and the reason, written before anything; kAuto runs kExact there.
// Each test skips without a GPU, and a variant the device cannot run (resolve_variant's reason) is
// skipped with that reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
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
// accumulation order inside the MMA, not the operand rounding, so kMma's bound holds unchanged.
constexpr double kLseAtol = 5e-2, kOutRelL2 = 2e-2;
// Tolerance of kAuto on fp32 inputs (kExact: fp32 CUDA cores, the table's fp32 accuracy); 1e-4 is
// far above kExact's observed ~1e-6 and far below a wrong kernel's O(1).
constexpr double kExactAtol = 1e-4;
constexpr float kScale = 0.13524f;
constexpr const char* kFwdOp = "sparse_attention_forward";
constexpr const char* kBwdOp = "sparse_attention_backward";
using cuda::Variant;

// The reason resolve_variant gives for not running `v` on p ("" when it runs).
template <class Params, class... Op>
std::string why_not(const Params& p, Variant v, Op... op) {
  try {
    cuda::resolve_variant(p, v, op...);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

// bf16 bit patterns of x (round to nearest even, cpu::bf16_from_float) and the fp32 values they hold.
std::vector<uint16_t> bf16_bits(const std::vector<float>& x) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = cpu::bf16_from_float(x[i]);
  return b;
}
std::vector<float> bf16_values(const std::vector<uint16_t>& b) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = cpu::bf16_to_float(b[i]);
  return x;
}

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

AttentionParams params_bf16(const Case& c, const uint16_t* q, const uint16_t* kv, const int32_t* idx,
                            const int32_t* len) {
  AttentionParams p = params_of(c, nullptr, nullptr, idx, len);
  p.dtype = DType::kBF16;
  p.q_bf16 = q;
  p.kv_bf16 = kv;
  return p;
}

// One forward run on poisoned (NaN), guarded outputs with a workspace of the queried size; returns
// out, lse and max_logits concatenated, and the queried size in *ws_bytes.
std::vector<float> run_forward(const AttentionParams& p, Variant v, size_t* ws_bytes = nullptr) {
  const size_t n_out = static_cast<size_t>(p.T) * p.H * p.Dv, n_row = static_cast<size_t>(p.T) * p.H;
  Guarded<float> out(n_out), lse(n_row), mx(n_row);
  DeviceBuffer<float> dout(out.data(), n_out), dlse(lse.data(), n_row), dmx(mx.data(), n_row);
  const size_t need = cuda::sparse_attention_forward_workspace_bytes(p, v);
  if (ws_bytes) *ws_bytes = need;
  DeviceScratch ws(need);
  cuda::sparse_attention_forward(p, AttentionForwardOut{dout.data(), dlse.data(), dmx.data()}, ws.data(), need,
                                 nullptr, v);
  sync_and_check("sparse_attention_forward");
  dout.download(out.data(), "out");
  dlse.download(lse.data(), "lse");
  dmx.download(mx.data(), "max_logits");
  EXPECT_GUARDS(out);
  EXPECT_GUARDS(lse);
  EXPECT_GUARDS(mx);
  std::vector<float> all = out.vec();
  all.insert(all.end(), lse.data(), lse.data() + n_row);
  all.insert(all.end(), mx.data(), mx.data() + n_row);
  return all;
}

// Runs variant v twice on case c (fp32 inputs) and checks it against the fp64 reference with
// atol_lse / rel_out (and out within atol_out elementwise when atol_out > 0).
void check_case(const Case& c, Variant v, double atol_lse, double rel_out, double atol_out) {
  const Inputs in = make_inputs(c);
  std::vector<double> rout, rlse, rmx;
  reference(in.q, in.kv, in.idx, in.len, c, rout, rlse, rmx);

  DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
  DeviceBuffer<int32_t> didx(in.idx.data(), in.idx.size()), dlen(in.len.empty() ? nullptr : in.len.data(), in.len.size());
  const AttentionParams p = params_of(c, dq.data(), dkv.data(), didx.data(), dlen.data());
  const size_t n_out = rout.size(), n_row = rlse.size();
  std::vector<std::vector<float>> runs;
  for (int rep = 0; rep < 2; ++rep) {
    size_t ws_bytes = 0;
    runs.push_back(run_forward(p, v, &ws_bytes));
    if (cuda::resolve_variant(p, v, kFwdOp) == Variant::kWgmma)
      EXPECT_EQ(ws_bytes, static_cast<size_t>(c.S) * kDqk * 2) << "kWgmma workspace on fp32 inputs: the bf16 kv copy";
    const float* out = runs.back().data();
    const float* lse = out + n_out;
    const float* mx = lse + n_row;
    // ±inf parity (and no NaN left from the poison: every element written), then the bound.
    EXPECT_TRUE(all_close(lse, rlse.data(), n_row, atol_lse, 0.0)) << "lse";
    EXPECT_TRUE(all_close(mx, rmx.data(), n_row, atol_lse, 0.0)) << "max_logits";
    const Diff d = compare(out, rout.data(), n_out);
    EXPECT_FALSE(d.special_mismatch) << d.where;
    EXPECT_LE(std::sqrt(d.nmse), rel_out) << "out relative L2 error";
    if (atol_out > 0) EXPECT_TRUE(all_close(out, rout.data(), n_out, atol_out, 0.0)) << "out";
    // Empty rows (all-invalid row 1, topk_length 0 row 2): exactly 0 / +inf / −inf.
    for (size_t row = 0; row < n_row; ++row)
      if (std::isinf(rlse[row])) {
        EXPECT_EQ(lse[row], INFINITY) << "empty row " << row;
        EXPECT_EQ(mx[row], -INFINITY) << "empty row " << row;
        for (int dd = 0; dd < kDv; ++dd) ASSERT_EQ(out[row * kDv + dd], 0.0f) << "empty row " << row;
      }
  }
  EXPECT_TRUE(bitwise_equal(runs[0].data(), runs[1].data(), runs[0].size())) << "rerun differs";
}

// A V3.2-shape probe on device buffers (aligned as the kernels need), fp32 or bf16.
struct Probe {
  Case c{"probe", 1, 64, 64, 64, 0.0, false, false};
  Inputs in = make_inputs(c);
  std::vector<uint16_t> q16 = bf16_bits(in.q), kv16 = bf16_bits(in.kv);
  DeviceBuffer<float> q{in.q.data(), in.q.size()}, kv{in.kv.data(), in.kv.size()};
  DeviceBuffer<uint16_t> dq16{q16.data(), q16.size()}, dkv16{kv16.data(), kv16.size()};
  DeviceBuffer<int32_t> idx{in.idx.data(), in.idx.size()};
  AttentionParams fp32() const { return params_of(c, q.data(), kv.data(), idx.data(), nullptr); }
  AttentionParams bf16() const { return params_bf16(c, dq16.data(), dkv16.data(), idx.data(), nullptr); }
};

TEST(CudaAttentionWgmma, SparseForwardMatchesFloat64) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  {
    const Probe probe;
    const std::string why = why_not(probe.fp32(), Variant::kWgmma, kFwdOp);
    if (!why.empty()) GTEST_SKIP() << why;
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
    check_case(c, Variant::kWgmma, kLseAtol, kOutRelL2, 0.0);
  }
}

// The tensor-core forwards take H % 64 == 0 only: asking kWgmma or kMma at H = 32 is a dsa::Error
// naming the op, the variant and the reason (from the workspace query and from the call, before any
// write), on any GPU; kAuto runs kExact there, for fp32 inputs (checked against fp64 with the fp32
// tolerance) and for bf16 inputs (bitwise the fp32 run on the same values: kExact widens bf16 exactly).
TEST(CudaAttentionWgmma, UnsupportedShapeIsNamedErrorAndAutoRunsExact) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  const Case c{"H=32 K=70", 2, 100, 32, 70, 0.1, false, false};
  const Inputs in = make_inputs(c);
  const std::vector<uint16_t> q16 = bf16_bits(in.q), kv16 = bf16_bits(in.kv);
  const std::vector<float> qr = bf16_values(q16), kvr = bf16_values(kv16);
  DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
  DeviceBuffer<float> dqr(qr.data(), qr.size()), dkvr(kvr.data(), kvr.size());
  DeviceBuffer<uint16_t> dq16(q16.data(), q16.size()), dkv16(kv16.data(), kv16.size());
  DeviceBuffer<int32_t> didx(in.idx.data(), in.idx.size());
  const AttentionParams p32 = params_of(c, dq.data(), dkv.data(), didx.data(), nullptr);
  const AttentionParams p16 = params_bf16(c, dq16.data(), dkv16.data(), didx.data(), nullptr);
  for (const Variant v : {Variant::kWgmma, Variant::kMma})
    for (const AttentionParams* p : {&p32, &p16}) {
      SCOPED_TRACE(std::string(cuda::variant_name(v)) + (p == &p16 ? ", bf16" : ", fp32"));
      const auto names = {kFwdOp, cuda::variant_name(v), "H a multiple of 64", "H = 32"};
      EXPECT_TRUE(throws_naming([&] { cuda::resolve_variant(*p, v, kFwdOp); }, names));
      EXPECT_TRUE(throws_naming([&] { cuda::sparse_attention_forward_workspace_bytes(*p, v); }, names));
      Guarded<float> out(static_cast<size_t>(c.T) * c.H * kDv), lse(static_cast<size_t>(c.T) * c.H);
      DeviceBuffer<float> dout(out.data(), out.size()), dlse(lse.data(), lse.size());
      DeviceScratch ws(size_t(c.S) * kDqk * 2);
      EXPECT_TRUE(throws_naming(
          [&] {
            cuda::sparse_attention_forward(*p, AttentionForwardOut{dout.data(), dlse.data(), nullptr}, ws.data(),
                                           ws.size(), nullptr, v);
          },
          names));
      sync_and_check("sparse_attention_forward (refused variant)");
      dout.download(out.data(), "out");
      dlse.download(lse.data(), "lse");
      EXPECT_TRUE(out.untouched()) << "out written despite the error";
      EXPECT_TRUE(lse.untouched()) << "lse written despite the error";
    }
  EXPECT_EQ(cuda::resolve_variant(p32, Variant::kAuto, kFwdOp), Variant::kExact);
  EXPECT_EQ(cuda::resolve_variant(p16, Variant::kAuto, kFwdOp), Variant::kExact);
  {
    SCOPED_TRACE("kAuto, fp32 inputs");
    check_case(c, Variant::kAuto, kExactAtol, kExactAtol, kExactAtol);
  }
  const AttentionParams pr = params_of(c, dqr.data(), dkvr.data(), didx.data(), nullptr);
  const std::vector<float> exact = run_forward(pr, Variant::kExact), automatic = run_forward(p16, Variant::kAuto);
  EXPECT_TRUE(bitwise_equal(exact.data(), automatic.data(), exact.size()))
      << "kAuto on bf16 inputs != kExact on fp32 inputs holding the same values";
}

// A workspace smaller than the query asks for is a named error, thrown before anything is written.
TEST(CudaAttentionWgmma, SmallWorkspaceIsNamedError) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  const Case c{"H=64 K=64", 1, 80, 64, 64, 0.0, false, false};
  const Inputs in = make_inputs(c);
  DeviceBuffer<float> dq(in.q.data(), in.q.size()), dkv(in.kv.data(), in.kv.size());
  DeviceBuffer<int32_t> didx(in.idx.data(), in.idx.size());
  const AttentionParams p = params_of(c, dq.data(), dkv.data(), didx.data(), nullptr);
  std::string skipped;
  for (const Variant v : {Variant::kWgmma, Variant::kMma}) {
    SCOPED_TRACE(cuda::variant_name(v));
    const std::string why = why_not(p, v, kFwdOp);
    if (!why.empty()) {
      skipped += why + "; ";
      continue;
    }
    const size_t need = cuda::sparse_attention_forward_workspace_bytes(p, v);
    ASSERT_EQ(need, static_cast<size_t>(c.S) * kDqk * 2) << "fp32 inputs: the bf16 kv copy";
    Guarded<float> out(static_cast<size_t>(c.T) * c.H * kDv), lse(static_cast<size_t>(c.T) * c.H);
    DeviceBuffer<float> dout(out.data(), out.size()), dlse(lse.data(), lse.size());
    DeviceScratch ws(need);
    EXPECT_TRUE(throws_naming(
        [&] {
          cuda::sparse_attention_forward(p, AttentionForwardOut{dout.data(), dlse.data(), nullptr}, ws.data(), need - 1,
                                         nullptr, v);
        },
        {kFwdOp, "workspace_bytes", cuda::variant_name(v)}))
        << "workspace_bytes = need - 1";
    EXPECT_TRUE(throws_naming(
        [&] {
          cuda::sparse_attention_forward(p, AttentionForwardOut{dout.data(), dlse.data(), nullptr}, nullptr, need,
                                         nullptr, v);
        },
        {kFwdOp, "workspace_bytes"}))
        << "null workspace";
    sync_and_check("sparse_attention_forward (small workspace)");
    dout.download(out.data(), "out");
    dlse.download(lse.data(), "lse");
    EXPECT_TRUE(out.untouched()) << "out written despite the error";
    EXPECT_TRUE(lse.untouched()) << "lse written despite the error";
  }
  if (!skipped.empty()) std::printf("[ skipped ] %s\n", skipped.c_str());
}

// ── bf16 inputs ≡ fp32 inputs holding the same values ───────────────────────────────────────────
// The tensor-core variants round fp32 q / kv to bf16 (round to nearest even) before any arithmetic,
// and kExact widens bf16 exactly, so fp32 arrays holding bf16-rounded values and the bf16 bits
// themselves must give the same bits out.

TEST(CudaAttentionDtype, ForwardBf16InputsEqualFp32InputsBitwise) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  const Case cases[] = {
      {"H=64 K=100, invalid, empty row, topk_length", 4, 257, 64, 100, 0.1, true, true},
      {"H=128 K=640 (long row)", 2, 2000, 128, 640, 0.02, false, false},
  };
  int ran = 0;
  std::string skipped;
  for (const Case& c : cases) {
    const Inputs in = make_inputs(c);
    const std::vector<uint16_t> q16 = bf16_bits(in.q), kv16 = bf16_bits(in.kv);
    const std::vector<float> qr = bf16_values(q16), kvr = bf16_values(kv16);
    DeviceBuffer<float> dq(qr.data(), qr.size()), dkv(kvr.data(), kvr.size());
    DeviceBuffer<uint16_t> dq16(q16.data(), q16.size()), dkv16(kv16.data(), kv16.size());
    DeviceBuffer<int32_t> didx(in.idx.data(), in.idx.size());
    DeviceBuffer<int32_t> dlen(in.len.empty() ? nullptr : in.len.data(), in.len.size());
    const AttentionParams p32 = params_of(c, dq.data(), dkv.data(), didx.data(), dlen.data());
    const AttentionParams p16 = params_bf16(c, dq16.data(), dkv16.data(), didx.data(), dlen.data());
    for (const Variant v : {Variant::kWgmma, Variant::kMma, Variant::kExact}) {
      SCOPED_TRACE(std::string(c.name) + ", " + cuda::variant_name(v));
      const std::string why = why_not(p32, v, kFwdOp);
      if (!why.empty()) {
        skipped += why + "; ";
        continue;
      }
      ASSERT_EQ(why_not(p16, v, kFwdOp), "") << "runs on fp32 inputs but not on bf16 ones";
      size_t ws32 = 0, ws16 = 0;
      const std::vector<float> a = run_forward(p32, v, &ws32), b = run_forward(p16, v, &ws16);
      if (v != Variant::kExact) EXPECT_EQ(ws32, static_cast<size_t>(c.S) * kDqk * 2) << "fp32: the bf16 kv copy";
      EXPECT_EQ(ws16, 0u) << "bf16 inputs are read where they lie";
      EXPECT_TRUE(bitwise_equal(a.data(), b.data(), a.size())) << "bf16 inputs != fp32 inputs (out, lse, max_logits)";
      ran += v != Variant::kExact;
    }
  }
  if (!skipped.empty()) std::printf("[ skipped ] %s\n", skipped.c_str());
  if (ran == 0) GTEST_SKIP() << "no tensor-core forward runs here: " << skipped;
}

// sparse_attention_decode: kMma (bf16 tile; fp32 q rounded in the kernel) and kExact (bf16 q widened),
// q_dtype bf16 against fp32 q holding the same values, on an fp8-record cache (MTP, topk_length, −1 and
// out-of-range slots) and a bf16 cache at H = 128.
TEST(CudaAttentionDtype, DecodeBf16QEqualsFp32QBitwise) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  struct DecodeCase {
    const char* name;
    int B, next_n, H, K, slots;
    KvCacheFormat format;
    bool lengths;
  };
  const DecodeCase cases[] = {
      {"fp8 records, MTP, topk_length", 2, 2, 64, 100, 200, KvCacheFormat::kFp8Record, true},
      {"bf16 cache, H=128", 1, 1, 128, 64, 70, KvCacheFormat::kBf16, false},
  };
  std::string skipped;
  for (const DecodeCase& c : cases) {
    Rng rng(2100 + c.K);
    const int rows = c.B * c.next_n;
    const std::vector<uint16_t> q16 = bf16_bits(rng.normal_vec(static_cast<size_t>(rows) * c.H * kDqk));
    const std::vector<float> qr = bf16_values(q16);
    std::vector<float> kv = rng.normal_vec(static_cast<size_t>(c.slots) * kDqk);
    std::vector<uint8_t> cache;
    if (c.format == KvCacheFormat::kFp8Record) {
      cache.resize(static_cast<size_t>(c.slots) * kMlaRecordBytes);
      MlaCacheParams mp;
      mp.N = c.slots; mp.format = ScaleFormat::kFloat; mp.kv = kv.data(); mp.records = cache.data();
      cpu::mla_cache_pack(mp);
    } else {
      const std::vector<uint16_t> kv16 = bf16_bits(kv);
      cache.resize(kv16.size() * 2);
      std::memcpy(cache.data(), kv16.data(), cache.size());
    }
    std::vector<int32_t> idx(static_cast<size_t>(rows) * c.K);
    for (auto& v : idx) {
      const float u = rng.uniform(0.0f, 1.0f);
      v = u < 0.05f ? kInvalidIndex : (u < 0.08f ? c.slots + rng.integer(0, 5) : rng.integer(0, c.slots - 1));
    }
    std::vector<int32_t> len;
    if (c.lengths) {
      len.resize(rows);
      for (int r = 0; r < rows; ++r) len[r] = r == 1 ? 0 : (r == 2 ? c.K / 2 : c.K);
    }
    DeviceBuffer<float> dq(qr.data(), qr.size());
    DeviceBuffer<uint16_t> dq16(q16.data(), q16.size());
    DeviceBuffer<uint8_t> dcache(cache.data(), cache.size());
    DeviceBuffer<int32_t> didx(idx.data(), idx.size()), dlen(len.empty() ? nullptr : len.data(), len.size());
    SparseDecodeParams base;
    base.B = c.B; base.next_n = c.next_n; base.H = c.H; base.K = c.K; base.num_slots = c.slots; base.scale = kScale;
    base.format = c.format; base.cache = dcache.data(); base.indices = didx.data(); base.topk_length = dlen.data();
    SparseDecodeParams p32 = base, p16 = base;
    p32.q = dq.data();
    p16.q_dtype = DType::kBF16;
    p16.q_bf16 = dq16.data();
    const size_t n_out = static_cast<size_t>(rows) * c.H * kDv, n_lse = static_cast<size_t>(rows) * c.H;
    auto run = [&](SparseDecodeParams p, Variant v) {
      Guarded<float> out(n_out), lse(n_lse);
      DeviceBuffer<float> dout(out.data(), n_out), dlse(lse.data(), n_lse);
      p.out = dout.data();
      p.lse = dlse.data();
      const size_t need = cuda::sparse_attention_decode_workspace_bytes(p, v);
      DeviceScratch ws(need);
      cuda::sparse_attention_decode(p, ws.data(), need, nullptr, v);
      sync_and_check("sparse_attention_decode");
      dout.download(out.data(), "out");
      dlse.download(lse.data(), "lse");
      EXPECT_GUARDS(out);
      EXPECT_GUARDS(lse);
      EXPECT_TRUE(std::none_of(out.data(), out.data() + n_out, [](float x) { return std::isnan(x); }))
          << "out unwritten";
      std::vector<float> all = out.vec();
      all.insert(all.end(), lse.data(), lse.data() + n_lse);
      return all;
    };
    for (const Variant v : {Variant::kMma, Variant::kExact}) {
      SCOPED_TRACE(std::string(c.name) + ", " + cuda::variant_name(v));
      const std::string why = why_not(p32, v);
      if (!why.empty()) {
        skipped += why + "; ";
        continue;
      }
      ASSERT_EQ(why_not(p16, v), "") << "runs on fp32 q but not on bf16 q";
      const std::vector<float> a = run(p32, v), b = run(p16, v);
      EXPECT_TRUE(bitwise_equal(a.data(), b.data(), a.size())) << "bf16 q != fp32 q (out, lse)";
    }
  }
  if (!skipped.empty()) std::printf("[ skipped ] %s\n", skipped.c_str());
}

// sparse_attention_backward: kCublas (fp32 q / kv rounded before its GEMMs) and kExact (bf16 widened),
// bf16 q / kv against fp32 ones holding the same values, with the same workspace_bytes for both (the
// larger of the two queries), so kCublas runs the same query chunks. out and lse come from a kExact
// forward on the same inputs. The V3.2 shape with −1 / ≥ S indices, topk_length and an all-invalid row,
// and odd dims (the scalar paths).
TEST(CudaAttentionDtype, BackwardBf16InputsEqualFp32InputsBitwise) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  struct BwdCase {
    const char* name;
    int T, S, H, Dqk, Dv, K;
  };
  const BwdCase cases[] = {
      {"V3.2 dims H=64 K=100, invalid, topk_length, empty row", 4, 257, 64, kDqk, kDv, 100},
      {"odd dims", 3, 20, 3, 33, 17, 7},
  };
  std::string skipped;
  for (const BwdCase& c : cases) {
    Rng rng(2300 + c.T * 7 + c.K);
    const std::vector<uint16_t> q16 = bf16_bits(rng.normal_vec(static_cast<size_t>(c.T) * c.H * c.Dqk));
    const std::vector<uint16_t> kv16 = bf16_bits(rng.normal_vec(static_cast<size_t>(c.S) * c.Dqk));
    const std::vector<float> qr = bf16_values(q16), kvr = bf16_values(kv16);
    const std::vector<float> dout_h = rng.normal_vec(static_cast<size_t>(c.T) * c.H * c.Dv);
    std::vector<int32_t> idx(static_cast<size_t>(c.T) * c.K);
    for (auto& v : idx) {
      const float u = rng.uniform(0.0f, 1.0f);
      v = u < 0.05f ? kInvalidIndex : (u < 0.1f ? c.S + rng.integer(0, 5) : rng.integer(0, c.S - 1));
    }
    std::fill(idx.begin() + c.K, idx.begin() + 2 * c.K, kInvalidIndex);   // row 1: no valid slot
    std::vector<int32_t> len(c.T);
    for (int t = 0; t < c.T; ++t) len[t] = t == 2 ? 0 : (t == 0 ? c.K / 3 : c.K);
    DeviceBuffer<float> dq(qr.data(), qr.size()), dkv(kvr.data(), kvr.size()), ddout(dout_h.data(), dout_h.size());
    DeviceBuffer<uint16_t> dq16(q16.data(), q16.size()), dkv16(kv16.data(), kv16.size());
    DeviceBuffer<int32_t> didx(idx.data(), idx.size()), dlen(len.data(), len.size());
    AttentionParams p32;
    p32.T = c.T; p32.S = c.S; p32.H = c.H; p32.Dqk = c.Dqk; p32.Dv = c.Dv;
    p32.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.Dqk)));
    p32.q = dq.data(); p32.kv = dkv.data(); p32.K = c.K; p32.indices = didx.data(); p32.topk_length = dlen.data();
    AttentionParams p16 = p32;
    p16.dtype = DType::kBF16;
    p16.q = p16.kv = nullptr;
    p16.q_bf16 = dq16.data();
    p16.kv_bf16 = dkv16.data();
    // out and lse of the inputs (kExact forward; max_logits dropped).
    const std::vector<float> fwd = run_forward(p32, Variant::kExact);
    const size_t n_out = static_cast<size_t>(c.T) * c.H * c.Dv, n_row = static_cast<size_t>(c.T) * c.H;
    DeviceBuffer<float> dout_fwd(fwd.data(), n_out), dlse(fwd.data() + n_out, n_row);
    const size_t n_dq = static_cast<size_t>(c.T) * c.H * c.Dqk, n_dkv = static_cast<size_t>(c.S) * c.Dqk;
    for (const Variant v : {Variant::kCublas, Variant::kExact}) {
      SCOPED_TRACE(std::string(c.name) + ", " + cuda::variant_name(v));
      const std::string why = why_not(p32, v, kBwdOp);
      if (!why.empty()) {
        skipped += why + "; ";
        continue;
      }
      ASSERT_EQ(why_not(p16, v, kBwdOp), "") << "runs on fp32 inputs but not on bf16 ones";
      const size_t ws_bytes = std::max(cuda::sparse_attention_backward_workspace_bytes(p32, v),
                                       cuda::sparse_attention_backward_workspace_bytes(p16, v));
      DeviceScratch ws(ws_bytes);
      auto run = [&](const AttentionParams& p) {
        Guarded<float> gdq(n_dq), gdkv(n_dkv);
        DeviceBuffer<float> bdq(gdq.data(), n_dq), bdkv(gdkv.data(), n_dkv);
        cuda::sparse_attention_backward(
            p, AttentionBackwardArgs{ddout.data(), dout_fwd.data(), dlse.data(), bdq.data(), bdkv.data()}, ws.data(),
            ws_bytes, nullptr, v);
        sync_and_check("sparse_attention_backward");
        bdq.download(gdq.data(), "dq");
        bdkv.download(gdkv.data(), "dkv");
        EXPECT_GUARDS(gdq);
        EXPECT_GUARDS(gdkv);
        std::vector<float> all = gdq.vec();
        all.insert(all.end(), gdkv.data(), gdkv.data() + n_dkv);
        EXPECT_TRUE(std::none_of(all.begin(), all.end(), [](float x) { return std::isnan(x); }))
            << "dq / dkv unwritten";
        return all;
      };
      const std::vector<float> a = run(p32), b = run(p16);
      EXPECT_TRUE(bitwise_equal(a.data(), b.data(), a.size())) << "bf16 inputs != fp32 inputs (dq, dkv)";
    }
  }
  if (!skipped.empty()) std::printf("[ skipped ] %s\n", skipped.c_str());
}

// kAuto by dtype at the V3.2 shape: bf16 inputs run kWgmma on an sm_90 device (this binary carries
// sm_90a code), else kMma where it runs (≥ 156 KiB of shared memory per block), else kExact; fp32
// inputs run kExact on every device. The backward (kCublas for bf16, sm_80+) and the decode (kMma for
// bf16 q) follow the same rule. A kAuto forward gives the bits of the variant it resolves to.
TEST(CudaAttentionDtype, AutoPicksTensorCoresForBf16AndExactForFp32) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  int dev = 0, major = 0, minor = 0;
  DSA_CUDA_TEST_CHECK(cudaGetDevice(&dev));
  DSA_CUDA_TEST_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  DSA_CUDA_TEST_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  const int sm = 10 * major + minor;
  const Probe probe;
  const AttentionParams p32 = probe.fp32(), p16 = probe.bf16();
  Variant want = Variant::kExact;
  if (sm == 90) want = Variant::kWgmma;
  else if (why_not(p16, Variant::kMma, kFwdOp).empty()) want = Variant::kMma;
  std::printf("[ auto ] sm_%d: bf16 forward -> %s\n", sm, cuda::variant_name(want));
  EXPECT_EQ(cuda::resolve_variant(p16, Variant::kAuto, kFwdOp), want) << "sm_" << sm;
  EXPECT_EQ(cuda::resolve_variant(p32, Variant::kAuto, kFwdOp), Variant::kExact);
  EXPECT_EQ(cuda::sparse_attention_forward_workspace_bytes(p16, Variant::kAuto), 0u);
  EXPECT_EQ(cuda::sparse_attention_forward_workspace_bytes(p32, Variant::kAuto), 0u) << "fp32 kAuto is kExact";
  {
    const std::vector<float> a = run_forward(p16, Variant::kAuto), b = run_forward(p16, want);
    EXPECT_TRUE(bitwise_equal(a.data(), b.data(), a.size())) << "kAuto (bf16) != " << cuda::variant_name(want);
    const std::vector<float> c = run_forward(p32, Variant::kAuto), d = run_forward(p32, Variant::kExact);
    EXPECT_TRUE(bitwise_equal(c.data(), d.data(), c.size())) << "kAuto (fp32) != exact";
  }
  EXPECT_EQ(cuda::resolve_variant(p16, Variant::kAuto, kBwdOp), sm >= 80 ? Variant::kCublas : Variant::kExact);
  EXPECT_EQ(cuda::resolve_variant(p32, Variant::kAuto, kBwdOp), Variant::kExact);

  SparseDecodeParams d32;
  d32.B = 1; d32.H = 64; d32.K = 64; d32.num_slots = 64; d32.scale = kScale; d32.format = KvCacheFormat::kBf16;
  d32.q = probe.q.data();   // pointers are not read by resolve_variant
  d32.cache = probe.dkv16.data();
  d32.indices = probe.idx.data();
  SparseDecodeParams d16 = d32;
  d16.q = nullptr;
  d16.q_dtype = DType::kBF16;
  d16.q_bf16 = probe.dq16.data();
  const Variant want_decode = why_not(d16, Variant::kMma).empty() ? Variant::kMma : Variant::kExact;
  if (sm == 90) EXPECT_EQ(want_decode, Variant::kMma) << why_not(d16, Variant::kMma);
  EXPECT_EQ(cuda::resolve_variant(d16, Variant::kAuto), want_decode);
  EXPECT_EQ(cuda::resolve_variant(d32, Variant::kAuto), Variant::kExact);
}

}  // namespace
}  // namespace dsa::test
