// layers.cpp — section 12 of the catalogue: the dense model layers (linear, RMSNorm, LayerNorm with
// bias, SwiGLU, embedding, softmax cross-entropy), forward and backward. Matmuls go through BLAS;
// row reductions accumulate in fp64. Every argument is checked before anything is written.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/blas.h"
#include "common/check.h"
#include "dsa/ops.h"

namespace dsa::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves (single-token decode).
constexpr int64_t kParallelMinWork = 1 << 14;

void require_rows(int64_t N, int C, const char* op) {
  detail::require_non_negative(N, op, "N");
  detail::require_positive(C, op, "C");
}

}  // namespace

void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O) {
  constexpr const char* op = "linear_forward";
  detail::require_non_negative(N, op, "N");
  detail::require_positive(I, op, "I");
  detail::require_positive(O, op, "O");
  detail::require_ptr(x, op, "x");
  detail::require_ptr(w, op, "w");
  detail::require_ptr(y, op, "y");
  if (N == 0) return;
  // y[N,O] = x[N,I] · W[O,I]ᵀ
  blas::sgemm(false, true, N, O, I, 1.0f, x, I, w, I, 0.0f, y, O);
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N,
                     int I, int O, bool accumulate_dx) {
  constexpr const char* op = "linear_backward";
  detail::require_non_negative(N, op, "N");
  detail::require_positive(I, op, "I");
  detail::require_positive(O, op, "O");
  detail::require_ptr(dy, op, "dy");
  if (dx != nullptr) detail::require_ptr(w, op, "w");
  if (dw != nullptr) detail::require_ptr(x, op, "x");
  if (N == 0) return;
  // inverts y = x·Wᵀ:  dx = dy·W  [N,O]·[O,I]
  if (dx != nullptr)
    blas::sgemm(false, false, N, I, O, 1.0f, dy, O, w, I, accumulate_dx ? 1.0f : 0.0f, dx, I);
  // dW += dyᵀ·x  [O,N]·[N,I]
  if (dw != nullptr)
    blas::sgemm(true, false, O, I, N, 1.0f, dy, O, x, I, 1.0f, dw, I);
}

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps) {
  constexpr const char* op = "rmsnorm_forward";
  require_rows(N, C, op);
  detail::require_ptr(x, op, "x");
  detail::require_ptr(w, op, "w");
  detail::require_ptr(y, op, "y");
  DSA_REQUIRE(eps > 0.0f, op, "eps = ", eps, " must be > 0");
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    double ss = 0.0;
    for (int c = 0; c < C; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / C + eps));
    if (rstd != nullptr) rstd[n] = r;
    float* yr = y + n * C;
    for (int c = 0; c < C; ++c) yr[c] = xr[c] * r * w[c];
  }
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                      float* dw, int64_t N, int C) {
  constexpr const char* op = "rmsnorm_backward";
  require_rows(N, C, op);
  detail::require_ptr(x, op, "x");
  detail::require_ptr(w, op, "w");
  detail::require_ptr(rstd, op, "rstd");
  detail::require_ptr(dy, op, "dy");
  detail::require_ptr(dx, op, "dx");
  // inverts y = x·r·w with r = (mean x² + eps)^-1/2:
  //   dx = r·(dy∘w) − x·r³·mean(x∘dy∘w);   dw += Σ_n dy·x·r
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    const double r = rstd[n];
    double dot = 0.0;
    for (int c = 0; c < C; ++c) dot += static_cast<double>(dyr[c]) * w[c] * xr[c];
    const double k = r * r * r * dot / C;
    float* dxr = dx + n * C;
    for (int c = 0; c < C; ++c) dxr[c] = static_cast<float>(r * dyr[c] * w[c] - k * xr[c]);
  }
  if (dw != nullptr) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int64_t n = 0; n < N; ++n) acc += static_cast<double>(dy[n * C + c]) * x[n * C + c] * rstd[n];
      dw[c] += static_cast<float>(acc);
    }
  }
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t N, int C, float eps) {
  constexpr const char* op = "layernorm_forward";
  require_rows(N, C, op);
  detail::require_ptr(x, op, "x");
  detail::require_ptr(w, op, "w");
  detail::require_ptr(b, op, "b");
  detail::require_ptr(y, op, "y");
  DSA_REQUIRE(eps > 0.0f, op, "eps = ", eps, " must be > 0");
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    double s = 0.0;
    for (int c = 0; c < C; ++c) s += xr[c];
    const double mu = s / C;
    double v = 0.0;
    for (int c = 0; c < C; ++c) v += (xr[c] - mu) * (xr[c] - mu);
    const double r = 1.0 / std::sqrt(v / C + eps);
    if (mean != nullptr) mean[n] = static_cast<float>(mu);
    if (rstd != nullptr) rstd[n] = static_cast<float>(r);
    float* yr = y + n * C;
    for (int c = 0; c < C; ++c) yr[c] = static_cast<float>((xr[c] - mu) * r) * w[c] + b[c];
  }
}

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dw, float* db, int64_t N, int C) {
  constexpr const char* op = "layernorm_backward";
  require_rows(N, C, op);
  detail::require_ptr(x, op, "x");
  detail::require_ptr(w, op, "w");
  detail::require_ptr(mean, op, "mean");
  detail::require_ptr(rstd, op, "rstd");
  detail::require_ptr(dy, op, "dy");
  // inverts y = x̂·w + b with x̂ = (x − μ)·r:
  //   g = dy∘w;  dx = r·(g − mean(g) − x̂·mean(g∘x̂));  dw += Σ dy·x̂;  db += Σ dy
  if (dx != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      const double mu = mean[n], r = rstd[n];
      double sg = 0.0, sgx = 0.0;
      for (int c = 0; c < C; ++c) {
        const double g = static_cast<double>(dyr[c]) * w[c];
        sg += g;
        sgx += g * (xr[c] - mu) * r;
      }
      sg /= C;
      sgx /= C;
      float* dxr = dx + n * C;
      for (int c = 0; c < C; ++c) {
        const double xh = (xr[c] - mu) * r;
        dxr[c] = static_cast<float>(r * (static_cast<double>(dyr[c]) * w[c] - sg - xh * sgx));
      }
    }
  }
  if (dw != nullptr || db != nullptr) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; ++c) {
      double aw = 0.0, ab = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        const double d = dy[n * C + c];
        aw += d * (x[n * C + c] - static_cast<double>(mean[n])) * rstd[n];
        ab += d;
      }
      if (dw != nullptr) dw[c] += static_cast<float>(aw);
      if (db != nullptr) db[c] += static_cast<float>(ab);
    }
  }
}

void swiglu_forward(const float* g, const float* u, float* a, int64_t N) {
  constexpr const char* op = "swiglu_forward";
  detail::require_non_negative(N, op, "N");
  detail::require_ptr(g, op, "g");
  detail::require_ptr(u, op, "u");
  detail::require_ptr(a, op, "a");
#pragma omp parallel for schedule(static) if (N > kParallelMinWork)
  for (int64_t i = 0; i < N; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-g[i]));
    a[i] = g[i] * s * u[i];
  }
}

void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N) {
  constexpr const char* op = "swiglu_backward";
  detail::require_non_negative(N, op, "N");
  detail::require_ptr(g, op, "g");
  detail::require_ptr(u, op, "u");
  detail::require_ptr(da, op, "da");
  detail::require_ptr(dg, op, "dg");
  detail::require_ptr(du, op, "du");
  // inverts a = g·σ(g)·u:  du = da·g·σ;  dg = da·u·σ·(1 + g·(1 − σ))
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-g[i]));
    const float gi = g[i], ui = u[i], d = da[i];
    du[i] = d * gi * s;
    dg[i] = d * ui * s * (1.0f + gi * (1.0f - s));
  }
}

void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C) {
  constexpr const char* op = "embedding_forward";
  require_rows(N, C, op);
  detail::require_positive(V, op, "V");
  detail::require_ptr(tokens, op, "tokens");
  detail::require_ptr(table, op, "table");
  detail::require_ptr(out, op, "out");
  for (int64_t n = 0; n < N; ++n)
    DSA_REQUIRE(tokens[n] >= 0 && tokens[n] < V, op, "tokens[", n, "] = ", tokens[n], " is out of range [0, ", V, ")");
#pragma omp parallel for schedule(static) if (N * C > kParallelMinWork)
  for (int64_t n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) out[n * C + c] = table[static_cast<int64_t>(tokens[n]) * C + c];
}

void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C) {
  constexpr const char* op = "embedding_backward";
  require_rows(N, C, op);
  detail::require_positive(V, op, "V");
  detail::require_ptr(tokens, op, "tokens");
  detail::require_ptr(dout, op, "dout");
  detail::require_ptr(dtable, op, "dtable");
  for (int64_t n = 0; n < N; ++n)
    DSA_REQUIRE(tokens[n] >= 0 && tokens[n] < V, op, "tokens[", n, "] = ", tokens[n], " is out of range [0, ", V, ")");
  // inverts out[n] = table[tokens[n]]: rows scatter-add in a fixed order (n ascending) per column
  // block, so the result is deterministic; columns are split across threads.
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c)
    for (int64_t n = 0; n < N; ++n) dtable[static_cast<int64_t>(tokens[n]) * C + c] += dout[n * C + c];
}

double cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V) {
  constexpr const char* op = "cross_entropy_forward";
  require_rows(N, V, op);
  detail::require_ptr(logits, op, "logits");
  detail::require_ptr(targets, op, "targets");
  for (int64_t n = 0; n < N; ++n)
    DSA_REQUIRE(targets[n] >= -1 && targets[n] < V, op, "targets[", n, "] = ", targets[n],
                " is out of range [-1, ", V, ")");
  // Rows in parallel, their sum in row order: an OpenMP reduction combines the threads' partial sums
  // in whatever order they finish, which changed the total's last bits from run to run at ≥ 3 threads.
  std::vector<double> row(static_cast<size_t>(N), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    double l = 0.0;
    if (targets[n] >= 0) {
      const float* z = logits + n * V;
      float m = -std::numeric_limits<float>::infinity();
      for (int v = 0; v < V; ++v) m = std::max(m, z[v]);
      double s = 0.0;
      for (int v = 0; v < V; ++v) s += std::exp(static_cast<double>(z[v]) - m);
      l = std::log(s) + m - z[targets[n]];
    }
    if (loss != nullptr) loss[n] = static_cast<float>(l);
    row[static_cast<size_t>(n)] = l;
  }
  double total = 0.0;
  for (const double l : row) total += l;
  return total;
}

void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits,
                            int64_t N, int V) {
  constexpr const char* op = "cross_entropy_backward";
  require_rows(N, V, op);
  detail::require_ptr(logits, op, "logits");
  detail::require_ptr(targets, op, "targets");
  detail::require_ptr(dlogits, op, "dlogits");
  for (int64_t n = 0; n < N; ++n)
    DSA_REQUIRE(targets[n] >= -1 && targets[n] < V, op, "targets[", n, "] = ", targets[n],
                " is out of range [-1, ", V, ")");
  // inverts loss = logsumexp(z) − z[target]:  dz = dloss·(softmax(z) − onehot)
#pragma omp parallel
  {
    std::vector<double> e(static_cast<size_t>(V));   // exp(z − m) of the row: one exp per logit
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      float* d = dlogits + n * V;
      if (targets[n] < 0) {
        for (int v = 0; v < V; ++v) d[v] = 0.0f;
        continue;
      }
      const float* z = logits + n * V;
      float m = -std::numeric_limits<float>::infinity();
      for (int v = 0; v < V; ++v) m = std::max(m, z[v]);
      double s = 0.0;
      for (int v = 0; v < V; ++v) s += (e[static_cast<size_t>(v)] = std::exp(static_cast<double>(z[v]) - m));
      const double inv = 1.0 / s;
      for (int v = 0; v < V; ++v) d[v] = static_cast<float>(dloss * e[static_cast<size_t>(v)] * inv);
      d[targets[n]] -= dloss;
    }
  }
}

}  // namespace dsa::cpu
