// exec_cuda.cu — the GPU executor of the model's passes (src/model/exec.h): the ops run on a CUDA
// backend (dsa::cuda::make_backend) on this executor's stream, the glue is four small kernels and
// cudaMemcpy2DAsync. Memory comes from the device's stream-ordered pool (cudaMallocAsync), kept
// cached between passes, so a training step allocates nothing from the driver after the first.
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"
#include "dsa/model_cuda.h"
#include "model/exec.h"

namespace dsa::cuda {
namespace {

constexpr int kGlueThreads = 256;

__global__ void add_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

__global__ void scale_kernel(float* __restrict__ x, float a, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= a;
}

__global__ void window_kernel(const int32_t* __restrict__ ks, const int32_t* __restrict__ ke, int64_t T, int K,
                              int32_t* __restrict__ idx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < T * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / K;
    const int j = static_cast<int>(i % K);
    const int32_t s = ke[t] - 1 - j;
    idx[i] = s >= ks[t] ? s : kInvalidIndex;
  }
}

__global__ void gather_kernel(const float* __restrict__ logits, int64_t S, const int32_t* __restrict__ idx, int64_t T,
                              int K, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < T * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t s = idx[i];
    out[i] = s >= 0 && s < S ? logits[(i / K) * S + s] : -INFINITY;
  }
}

// Grid of a grid-stride loop over n elements (capped: the loops stride).
int glue_blocks(int64_t n) {
  constexpr int64_t kMaxBlocks = 4096;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (n + kGlueThreads - 1) / kGlueThreads)));
}

class CudaExec final : public model::Exec {
 public:
  explicit CudaExec(int device) : device_(device) {
    int count = 0;
    DSA_CUDA_CALL("attach_model", cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
      throw Error("attach_model: device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                  " CUDA device(s))");
    select();
    DSA_CUDA_CALL("attach_model", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    backend_ = make_backend(stream_);
    // Keep freed blocks in the pool between passes instead of returning them at every sync.
    cudaMemPool_t pool;
    DSA_CUDA_CALL("attach_model", cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = std::numeric_limits<uint64_t>::max();
    DSA_CUDA_CALL("attach_model", cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }
  ~CudaExec() override {
    params_.clear();
    grads_.clear();
    inv_freq_ = model::FBuf();
    backend_.reset();
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  bool host_memory() const override { return false; }

  void begin_run(const model::Model::Impl& m, std::vector<model::Tensor>* grads) override {
    select();
    if (params_.empty()) {   // the first pass sizes the mirrors: parameters, gradients, RoPE table
      for (const model::Tensor& t : m.params) {
        params_.push_back(zeros(t.numel()));
        grads_.push_back(zeros(t.numel()));
      }
      inv_freq_ = upload(m.inv_freq);
    }
    if (m.params.size() != params_.size()) throw Error("model exec: the model's parameter list changed since its first pass");
    for (size_t i = 0; i < params_.size(); ++i) {
      if (m.params[i].numel() != params_[i].size())
        throw Error("model exec: parameter " + m.params[i].name + " changed size since its first pass");
      DSA_CUDA_CALL("model exec", cudaMemcpyAsync(params_[i].data(), m.params[i].data.data(), sizeof(float) * params_[i].size(),
                                                  cudaMemcpyHostToDevice, stream_));
      if (grads)
        DSA_CUDA_CALL("model exec", cudaMemsetAsync(grads_[i].data(), 0, sizeof(float) * grads_[i].size(), stream_));
    }
    want_grads_ = grads != nullptr;
  }
  void end_run(std::vector<model::Tensor>* grads) override {
    if (grads)
      for (size_t i = 0; i < grads_.size(); ++i)
        DSA_CUDA_CALL("model exec", cudaMemcpyAsync((*grads)[i].data.data(), grads_[i].data(), sizeof(float) * grads_[i].size(),
                                                    cudaMemcpyDeviceToHost, stream_));
    sync();
  }
  const float* param(int i) const override { return params_[static_cast<size_t>(i)].data(); }
  float* grad(int i) override {
    if (!want_grads_) throw Error("model: a gradient was asked for in a forward-only pass");
    return grads_[static_cast<size_t>(i)].data();
  }
  const float* inv_freq() const override { return inv_freq_.data(); }

  model::FBuf zeros(int64_t n) override { return model::FBuf(alloc<float>(n), n); }
  model::IBuf upload(const std::vector<int32_t>& v) override {
    model::IBuf b(alloc<int32_t>(static_cast<int64_t>(v.size())), static_cast<int64_t>(v.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(b.data(), v.data(), sizeof(int32_t) * v.size(), cudaMemcpyHostToDevice, stream_));
    return b;
  }
  model::FBuf upload(const std::vector<float>& v) override {
    model::FBuf b = zeros(static_cast<int64_t>(v.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(b.data(), v.data(), sizeof(float) * v.size(), cudaMemcpyHostToDevice, stream_));
    return b;
  }
  std::vector<float> download(const model::FBuf& b) override {
    std::vector<float> v(static_cast<size_t>(b.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(v.data(), b.data(), sizeof(float) * v.size(), cudaMemcpyDeviceToHost, stream_));
    sync();
    return v;
  }
  std::vector<int32_t> download(const model::IBuf& b) override {
    std::vector<int32_t> v(static_cast<size_t>(b.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(v.data(), b.data(), sizeof(int32_t) * v.size(), cudaMemcpyDeviceToHost, stream_));
    sync();
    return v;
  }

  void copy(float* dst, const float* src, int64_t n) override {
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(dst, src, sizeof(float) * static_cast<size_t>(n), cudaMemcpyDeviceToDevice, stream_));
  }
  void add(float* y, const float* x, int64_t n) override {
    add_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(y, x, n);
    DSA_CUDA_LAUNCH_CHECK("model exec add");
  }
  void scale(float* x, float a, int64_t n) override {
    scale_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(x, a, n);
    DSA_CUDA_LAUNCH_CHECK("model exec scale");
  }
  void copy_cols(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows, int width) override {
    if (rows <= 0 || width <= 0) return;
    DSA_CUDA_CALL("model exec", cudaMemcpy2DAsync(dst, sizeof(float) * ldd, src, sizeof(float) * lds, sizeof(float) * width,
                                                  static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream_));
  }
  void window_indices(const int32_t* ks, const int32_t* ke, int64_t T, int K, int32_t* idx) override {
    window_kernel<<<glue_blocks(T * K), kGlueThreads, 0, stream_>>>(ks, ke, T, K, idx);
    DSA_CUDA_LAUNCH_CHECK("model exec window_indices");
  }
  void gather_selected(const float* logits, int64_t S, const int32_t* idx, int64_t T, int K, float* out) override {
    gather_kernel<<<glue_blocks(T * K), kGlueThreads, 0, stream_>>>(logits, S, idx, T, K, out);
    DSA_CUDA_LAUNCH_CHECK("model exec gather_selected");
  }
  double sum(const float* x, int64_t n) override {
    std::vector<float> v(static_cast<size_t>(n));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(v.data(), x, sizeof(float) * v.size(), cudaMemcpyDeviceToHost, stream_));
    sync();
    double s = 0.0;
    for (const float f : v) s += f;
    return s;
  }

  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
            float beta, float* C, int64_t ldc) override {
    cuda::gemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, stream_);
  }
  void mm_xwt(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
              int64_t ldy) override {
    if (N > 0) cuda::gemm(false, true, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy, stream_);
  }
  void mm_xw(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
             int64_t ldy) override {
    if (N > 0) cuda::gemm(false, false, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy, stream_);
  }

  Backend& ops() override { return *backend_; }

 private:
  void select() const { DSA_CUDA_CALL("model exec", cudaSetDevice(device_)); }
  void sync() const { DSA_CUDA_CALL("model exec", cudaStreamSynchronize(stream_)); }

  // n zero-filled elements from the stream-ordered pool, freed on the same stream (so a buffer is
  // reused only by work queued after everything that used it).
  template <class T>
  std::shared_ptr<T> alloc(int64_t n) {
    const size_t bytes = sizeof(T) * static_cast<size_t>(std::max<int64_t>(n, 1));
    void* p = nullptr;
    DSA_CUDA_CALL("model exec", cudaMallocAsync(&p, bytes, stream_));
    DSA_CUDA_CALL("model exec", cudaMemsetAsync(p, 0, bytes, stream_));
    cudaStream_t s = stream_;
    return std::shared_ptr<T>(static_cast<T*>(p), [s](T* q) { cudaFreeAsync(q, s); });
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Backend> backend_;
  bool want_grads_ = false;
  std::vector<model::FBuf> params_, grads_;
  model::FBuf inv_freq_;
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();   // clear the sticky "no device" so later calls start clean
    return 0;
  }
  return n;
}

void attach_model(model::Model& m, int device) { m.set_exec(std::make_shared<CudaExec>(device)); }

}  // namespace dsa::cuda
