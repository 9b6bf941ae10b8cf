// cuda_backend_layers.cu — the model-layer side of the GPU test rows (ops.h §12): CudaBackend methods
// that copy the host inputs to the device (DeviceBuffer, guarded), run dsa::cuda::<op> on the
// default stream, synchronise and copy the outputs back (checking the device guards). The layer ops
// have a single kernel each, so every CudaBackend class runs the same code.
//
// Data checks: the device ops cannot see tokens / targets on the host (cuda_ops.h: an out-of-range
// token is a zero row, an out-of-range target counts as −1). Here the data are on the host, so the
// wrapper makes the CPU's range check first (same dsa::Error message) — exactly what a caller holding
// host-side tokens would do — and the table's bad-input cases behave as on the CPU. The device's own
// out-of-range behaviour and cuda::gemm's transposes are checked by the plain TESTs at the bottom.
#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <vector>

#include "common/check.h"
#include "cuda/cuda_backend.h"
#include "cuda/device_buffer.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {
namespace {

// Element count of an [a, b] array; a bad (negative) size yields 0 so the op's own check throws.
size_t count(int64_t a, int64_t b = 1) { return a > 0 && b > 0 ? static_cast<size_t>(a) * static_cast<size_t>(b) : 0; }

// The CPU's data check of ids (in [lo, V)), made on the host copy before anything is uploaded. The
// CPU checks it last: with a bad size or a null required pointer the op's own check reports that.
void require_ids(const int32_t* ids, int64_t N, int V, int C, int32_t lo, std::initializer_list<const void*> required,
                 const char* op, const char* name) {
  if (ids == nullptr || N <= 0 || V <= 0 || C <= 0) return;
  for (const void* p : required)
    if (p == nullptr) return;
  for (int64_t n = 0; n < N; ++n)
    DSA_REQUIRE(ids[n] >= lo && ids[n] < V, op, name, "[", n, "] = ", ids[n], " is out of range [", lo, ", ", V, ")");
}

}  // namespace

void CudaBackend::linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O) {
  DeviceBuffer<float> dx(x, count(N, I)), dw(w, count(O, I)), dy(y, count(N, O));
  dev().linear_forward(dx.data(), dw.data(), dy.data(), N, I, O);
  sync_and_check("linear_forward");
  dy.download(y, "y");
}

void CudaBackend::linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N,
                                  int I, int O, bool accumulate_dx) {
  DeviceBuffer<float> d_x(x, count(N, I)), d_w(w, count(O, I)), d_dy(dy, count(N, O));
  DeviceBuffer<float> d_dx(dx, count(N, I)), d_dw(dw, count(O, I));
  dev().linear_backward(d_x.data(), d_w.data(), d_dy.data(), d_dx.data(), d_dw.data(), N, I, O, accumulate_dx);
  sync_and_check("linear_backward");
  d_dx.download(dx, "dx");
  d_dw.download(dw, "dw");
}

void CudaBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps) {
  DeviceBuffer<float> d_x(x, count(N, C)), d_w(w, count(C)), d_y(y, count(N, C)), d_r(rstd, count(N));
  dev().rmsnorm_forward(d_x.data(), d_w.data(), d_y.data(), d_r.data(), N, C, eps);
  sync_and_check("rmsnorm_forward");
  d_y.download(y, "y");
  d_r.download(rstd, "rstd");
}

void CudaBackend::rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                   float* dw, int64_t N, int C) {
  DeviceBuffer<float> d_x(x, count(N, C)), d_w(w, count(C)), d_r(rstd, count(N)), d_dy(dy, count(N, C));
  DeviceBuffer<float> d_dx(dx, count(N, C)), d_dw(dw, count(C));
  dev().rmsnorm_backward(d_x.data(), d_w.data(), d_r.data(), d_dy.data(), d_dx.data(), d_dw.data(), N, C);
  sync_and_check("rmsnorm_backward");
  d_dx.download(dx, "dx");
  d_dw.download(dw, "dw");
}

void CudaBackend::layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                                    int64_t N, int C, float eps) {
  DeviceBuffer<float> d_x(x, count(N, C)), d_w(w, count(C)), d_b(b, count(C)), d_y(y, count(N, C));
  DeviceBuffer<float> d_m(mean, count(N)), d_r(rstd, count(N));
  dev().layernorm_forward(d_x.data(), d_w.data(), d_b.data(), d_y.data(), d_m.data(), d_r.data(), N, C, eps);
  sync_and_check("layernorm_forward");
  d_y.download(y, "y");
  d_m.download(mean, "mean");
  d_r.download(rstd, "rstd");
}

void CudaBackend::layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                                     const float* dy, float* dx, float* dw, float* db, int64_t N, int C) {
  DeviceBuffer<float> d_x(x, count(N, C)), d_w(w, count(C)), d_m(mean, count(N)), d_r(rstd, count(N));
  DeviceBuffer<float> d_dy(dy, count(N, C)), d_dx(dx, count(N, C)), d_dw(dw, count(C)), d_db(db, count(C));
  dev().layernorm_backward(d_x.data(), d_w.data(), d_m.data(), d_r.data(), d_dy.data(), d_dx.data(), d_dw.data(),
                           d_db.data(), N, C);
  sync_and_check("layernorm_backward");
  d_dx.download(dx, "dx");
  d_dw.download(dw, "dw");
  d_db.download(db, "db");
}

void CudaBackend::swiglu_forward(const float* g, const float* u, float* a, int64_t N) {
  DeviceBuffer<float> d_g(g, count(N)), d_u(u, count(N)), d_a(a, count(N));
  dev().swiglu_forward(d_g.data(), d_u.data(), d_a.data(), N);
  sync_and_check("swiglu_forward");
  d_a.download(a, "a");
}

void CudaBackend::swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N) {
  DeviceBuffer<float> d_g(g, count(N)), d_u(u, count(N)), d_da(da, count(N)), d_dg(dg, count(N)), d_du(du, count(N));
  dev().swiglu_backward(d_g.data(), d_u.data(), d_da.data(), d_dg.data(), d_du.data(), N);
  sync_and_check("swiglu_backward");
  d_dg.download(dg, "dg");
  d_du.download(du, "du");
}

void CudaBackend::embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C) {
  require_ids(tokens, N, V, C, 0, {table, out}, "embedding_forward", "tokens");
  DeviceBuffer<int32_t> d_t(tokens, count(N));
  DeviceBuffer<float> d_table(table, count(V, C)), d_out(out, count(N, C));
  dev().embedding_forward(d_t.data(), d_table.data(), d_out.data(), N, V, C);
  sync_and_check("embedding_forward");
  d_out.download(out, "out");
}

void CudaBackend::embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C) {
  require_ids(tokens, N, V, C, 0, {dout, dtable}, "embedding_backward", "tokens");
  DeviceBuffer<int32_t> d_t(tokens, count(N));
  DeviceBuffer<float> d_dout(dout, count(N, C)), d_dtable(dtable, count(V, C));
  dev().embedding_backward(d_t.data(), d_dout.data(), d_dtable.data(), N, V, C);
  sync_and_check("embedding_backward");
  d_dtable.download(dtable, "dtable");
}

void CudaBackend::cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V) {
  require_ids(targets, N, V, 1, kInvalidIndex, {logits}, "cross_entropy_forward", "targets");
  // The device op requires loss (the caller sums); the CPU's may be null: stage it here.
  std::vector<float> staged(count(N), 0.0f);
  DeviceBuffer<float> d_z(logits, count(N, V)), d_loss(N > 0 ? staged.data() : nullptr, count(N));
  DeviceBuffer<int32_t> d_t(targets, count(N));
  float unused = 0.0f;   // N ≤ 0: the op writes nothing but wants a non-null loss
  float* loss_dev = N > 0 ? d_loss.data() : &unused;
  dev().cross_entropy_forward(d_z.data(), d_t.data(), loss_dev, N, V);
  sync_and_check("cross_entropy_forward");
  d_loss.download(staged.data(), "loss");
  if (loss != nullptr) std::copy(staged.begin(), staged.end(), loss);
}

void CudaBackend::cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits,
                                         int64_t N, int V) {
  require_ids(targets, N, V, 1, kInvalidIndex, {logits, dlogits}, "cross_entropy_backward", "targets");
  DeviceBuffer<float> d_z(logits, count(N, V)), d_dz(dlogits, count(N, V));
  DeviceBuffer<int32_t> d_t(targets, count(N));
  dev().cross_entropy_backward(d_z.data(), d_t.data(), dloss, d_dz.data(), N, V);
  sync_and_check("cross_entropy_backward");
  d_dz.download(dlogits, "dlogits");
}

namespace {

// ── device-only behaviour (plain TESTs; skipped without a GPU) ───────────────────────────────

// cuda::gemm against an fp64 product for all four transposes, padded leading dimensions and
// beta ∈ {0, 1.5}; the fp32 (no TF32) tolerance: K·2^-24 relative to Σ|a·b| with a margin.
TEST(CudaLayers, GemmTransposesAndLeadingDimensions) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  constexpr int64_t M = 37, N = 19, K = 70, kPad = 3;
  Rng rng(2024);
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (float beta : {0.0f, 1.5f}) {
        const int64_t lda = (ta ? M : K) + kPad, ldb = (tb ? K : N) + kPad, ldc = N + kPad;
        const std::vector<float> A = rng.normal_vec(static_cast<size_t>((ta ? K : M) * lda));
        const std::vector<float> B = rng.normal_vec(static_cast<size_t>((tb ? N : K) * ldb));
        std::vector<float> C = rng.normal_vec(static_cast<size_t>(M * ldc));
        const std::vector<float> C0 = C;
        DeviceBuffer<float> dA(A.data(), A.size()), dB(B.data(), B.size()), dC(C.data(), C.size());
        cuda::gemm(ta, tb, M, N, K, dA.data(), lda, dB.data(), ldb, beta, dC.data(), ldc, nullptr);
        sync_and_check("gemm");
        dC.download(C.data(), "C");
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < ldc; ++n) {
            if (n >= N) {   // padding columns of C are never touched
              ASSERT_EQ(C[m * ldc + n], C0[m * ldc + n]);
              continue;
            }
            double want = beta * static_cast<double>(C0[m * ldc + n]), mag = std::fabs(want);
            for (int64_t k = 0; k < K; ++k) {
              const double a = ta ? A[k * lda + m] : A[m * lda + k], b = tb ? B[n * ldb + k] : B[k * ldb + n];
              want += a * b;
              mag += std::fabs(a * b);
            }
            ASSERT_NEAR(C[m * ldc + n], want, 4.0 * K * 0x1p-24 * mag + 1e-6)
                << "ta " << ta << " tb " << tb << " beta " << beta << " at " << m << "," << n;
          }
      }
  float* null_c = nullptr;
  EXPECT_TRUE(throws_naming([&] { cuda::gemm(false, false, 2, 2, 2, nullptr, 2, nullptr, 2, 0.0f, null_c, 2, nullptr); },
                            {"gemm", "C is null"}));
  EXPECT_TRUE(throws_naming([&] { cuda::gemm(false, false, 2, 3, 4, nullptr, 3, nullptr, 3, 0.0f, null_c, 3, nullptr); },
                            {"gemm", "lda = 3"}));
}

// The device's own handling of data it cannot check: out-of-range tokens embed as zero rows and get
// no gradient; out-of-range targets count as −1.
TEST(CudaLayers, OutOfRangeIdsOnTheDevice) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  constexpr int N = 4, V = 3, C = 5;
  const std::vector<int32_t> tokens = {1, 7, -4, 1};
  Rng rng(77);
  const std::vector<float> table = rng.normal_vec(V * C), dout = rng.normal_vec(N * C);
  std::vector<float> out(N * C, -1.0f), dtable(V * C, 0.0f);
  DeviceBuffer<int32_t> d_tok(tokens.data(), N);
  DeviceBuffer<float> d_table(table.data(), table.size()), d_out(out.data(), out.size());
  DeviceBuffer<float> d_dout(dout.data(), dout.size()), d_dtable(dtable.data(), dtable.size());
  cuda::embedding_forward(d_tok.data(), d_table.data(), d_out.data(), N, V, C, nullptr);
  const size_t bytes = cuda::embedding_backward_workspace_bytes(N, V);
  DeviceScratch ws(bytes);
  cuda::embedding_backward(d_tok.data(), d_dout.data(), d_dtable.data(), N, V, C, ws.data(), bytes, nullptr);
  sync_and_check("embedding");
  d_out.download(out.data(), "out");
  d_dtable.download(dtable.data(), "dtable");
  for (int c = 0; c < C; ++c) {
    EXPECT_EQ(out[0 * C + c], table[1 * C + c]);
    EXPECT_EQ(out[1 * C + c], 0.0f);
    EXPECT_EQ(out[2 * C + c], 0.0f);
    EXPECT_EQ(dtable[0 * C + c], 0.0f);
    EXPECT_EQ(dtable[1 * C + c], dout[0 * C + c] + dout[3 * C + c]);
    EXPECT_EQ(dtable[2 * C + c], 0.0f);
  }
  const std::vector<int32_t> targets = {0, 3, -9, 2};
  const std::vector<float> logits = rng.normal_vec(N * V);
  std::vector<float> loss(N, -1.0f), dz(N * V, -1.0f);
  DeviceBuffer<int32_t> d_tgt(targets.data(), N);
  DeviceBuffer<float> d_z(logits.data(), logits.size()), d_loss(loss.data(), N), d_dz(dz.data(), dz.size());
  cuda::cross_entropy_forward(d_z.data(), d_tgt.data(), d_loss.data(), N, V, nullptr);
  cuda::cross_entropy_backward(d_z.data(), d_tgt.data(), 1.0f, d_dz.data(), N, V, nullptr);
  sync_and_check("cross_entropy");
  d_loss.download(loss.data(), "loss");
  d_dz.download(dz.data(), "dz");
  EXPECT_GT(loss[0], 0.0f);
  EXPECT_EQ(loss[1], 0.0f);
  EXPECT_EQ(loss[2], 0.0f);
  for (int v = 0; v < V; ++v) {
    EXPECT_EQ(dz[1 * V + v], 0.0f);
    EXPECT_EQ(dz[2 * V + v], 0.0f);
  }
  EXPECT_TRUE(throws_naming([&] { cuda::embedding_backward(d_tok.data(), d_dout.data(), d_dtable.data(), N, V, C,
                                                           nullptr, 0, nullptr); },
                            {"embedding_backward", "workspace_bytes"}));
}

}  // namespace
}  // namespace dsa::test
