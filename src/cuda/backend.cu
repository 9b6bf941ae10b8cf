// backend.cu — the CUDA backend of dsa/backend.h: every op of DSA_OPS on device pointers, in order on
// one stream, with the backend's variant class and one growing workspace.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  CudaBackend(cudaStream_t stream, Variant variant) : variant_(variant) {
    DSA_CUDA_CALL("make_backend", cudaGetDevice(&device_));
    if (stream == nullptr) {
      DSA_CUDA_CALL("make_backend", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      own_stream_ = true;
    } else {
      stream_ = stream;
    }
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (own_stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda:" + std::to_string(device_) + "/" + variant_name(variant_); }
  bool host_memory() const override { return false; }
  void synchronize() override { DSA_CUDA_CALL("cuda backend", cudaStreamSynchronize(stream_)); }

  void fp8_block_quantize(const Fp8BlockQuantizeParams& p) override { cuda::fp8_block_quantize(p, stream_); }
  void fp8_block_dequantize(const Fp8BlockDequantizeParams& p) override { cuda::fp8_block_dequantize(p, stream_); }
  void mla_cache_pack(const MlaCacheParams& p) override { cuda::mla_cache_pack(p, stream_); }
  void mla_cache_unpack(const MlaCacheParams& p) override { cuda::mla_cache_unpack(p, stream_); }
  void indexer_cache_pack(const IndexerCacheParams& p) override { cuda::indexer_cache_pack(p, stream_); }
  void indexer_cache_unpack(const IndexerCacheParams& p) override { cuda::indexer_cache_unpack(p, stream_); }
  void hadamard_transform(float* x, int64_t N, int D) override { cuda::hadamard_transform(x, N, D, stream_); }
  void rope_forward(const RopeParams& p) override { cuda::rope_forward(p, stream_); }
  void rope_backward(const RopeParams& p) override { cuda::rope_backward(p, stream_); }
  void indexer_quantize_fp8(const IndexerQuantizeParams& p) override { cuda::indexer_quantize_fp8(p, stream_); }
  void indexer_logits(const IndexerParams& p, float* logits) override {
    cuda::indexer_logits(p, logits, stream_, variant_for("indexer_logits"));
  }
  void topk_select(const TopkParams& p) override {
    const size_t bytes = cuda::topk_select_workspace_bytes(p.T, p.S, p.K);
    cuda::topk_select(p, workspace(bytes), bytes, stream_);
  }
  void indexer_topk(const IndexerParams& p, int K, int32_t* indices) override {
    const Variant v = variant_for("indexer_topk");
    const size_t bytes = cuda::indexer_topk_workspace_bytes(p, K, v);
    cuda::indexer_topk(p, K, indices, workspace(bytes), bytes, stream_, v);
  }
  void indexer_backward(const IndexerBackwardParams& p) override {
    const size_t bytes = cuda::indexer_backward_workspace_bytes(p);
    cuda::indexer_backward(p, workspace(bytes), bytes, stream_);
  }
  void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) override {
    const Variant v = variant_for("sparse_attention_forward");
    const size_t bytes = cuda::sparse_attention_forward_workspace_bytes(p, v);
    cuda::sparse_attention_forward(p, o, workspace(bytes), bytes, stream_, v);
  }
  void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) override {
    const Variant v = variant_for("sparse_attention_backward");
    const size_t bytes = cuda::sparse_attention_backward_workspace_bytes(p, v);
    cuda::sparse_attention_backward(p, b, workspace(bytes), bytes, stream_, v);
  }
  void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) override {
    cuda::dense_attention_forward(p, o, stream_);
  }
  void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) override {
    const size_t bytes = cuda::dense_attention_backward_workspace_bytes(p);
    cuda::dense_attention_backward(p, b, workspace(bytes), bytes, stream_);
  }
  void indexer_kl_forward(const IndexerKlParams& p, float* loss) override { cuda::indexer_kl_forward(p, loss, stream_); }
  void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits) override {
    cuda::indexer_kl_backward(p, dloss, d_index_logits, stream_);
  }
  void indexer_logits_paged(const PagedIndexerParams& p, float* logits) override {
    cuda::indexer_logits_paged(p, logits, stream_, variant_for("indexer_logits_paged"));
  }
  void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                         int32_t* indices) override {
    cuda::paged_to_physical(B, next_n, K, block_table, max_blocks, num_pages, indices, stream_);
  }
  void sparse_attention_decode(const SparseDecodeParams& p) override {
    if (p.bf16_probs)
      throw ::dsa::Error("sparse_attention_decode: bf16_probs (bf16 probabilities) runs on the CPU only");
    const Variant v = variant_for("sparse_attention_decode");
    const size_t bytes = cuda::sparse_attention_decode_workspace_bytes(p, v);
    cuda::sparse_attention_decode(p, workspace(bytes), bytes, stream_, v);
  }
  void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O) override {
    cuda::linear_forward(x, w, y, N, I, O, stream_);
  }
  void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N, int I, int O,
                       bool accumulate_dx) override {
    cuda::linear_backward(x, w, dy, dx, dw, N, I, O, accumulate_dx, stream_);
  }
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps) override {
    cuda::rmsnorm_forward(x, w, y, rstd, N, C, eps, stream_);
  }
  void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                        int64_t N, int C) override {
    cuda::rmsnorm_backward(x, w, rstd, dy, dx, dw, N, C, stream_);
  }
  void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N,
                         int C, float eps) override {
    cuda::layernorm_forward(x, w, b, y, mean, rstd, N, C, eps, stream_);
  }
  void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                          float* dx, float* dw, float* db, int64_t N, int C) override {
    cuda::layernorm_backward(x, w, mean, rstd, dy, dx, dw, db, N, C, stream_);
  }
  void swiglu_forward(const float* g, const float* u, float* a, int64_t N) override {
    cuda::swiglu_forward(g, u, a, N, stream_);
  }
  void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N) override {
    cuda::swiglu_backward(g, u, da, dg, du, N, stream_);
  }
  void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C) override {
    cuda::embedding_forward(tokens, table, out, N, V, C, stream_);
  }
  void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C) override {
    const size_t bytes = cuda::embedding_backward_workspace_bytes(N, V);
    cuda::embedding_backward(tokens, dout, dtable, N, V, C, workspace(bytes), bytes, stream_);
  }
  void cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V) override {
    cuda::cross_entropy_forward(logits, targets, loss, N, V, stream_);
  }
  void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N,
                              int V) override {
    cuda::cross_entropy_backward(logits, targets, dloss, dlogits, N, V, stream_);
  }

 private:
  // The backend's variant class for `op`: itself where the op has that variant, else kAuto.
  Variant variant_for(const char* op) const { return op_has_variant(op, variant_) ? variant_ : Variant::kAuto; }

  // At least `bytes` of workspace on the stream (grown stream-ordered: the old buffer is freed after
  // the work queued on it). 256-byte aligned (cudaMallocAsync), as every op's alignment needs.
  void* workspace(size_t bytes) {
    if (bytes == 0) return nullptr;
    if (bytes > workspace_bytes_) {
      if (workspace_ != nullptr) DSA_CUDA_CALL("cuda backend", cudaFreeAsync(workspace_, stream_));
      workspace_ = nullptr;
      workspace_bytes_ = 0;
      DSA_CUDA_CALL("cuda backend workspace", cudaMallocAsync(&workspace_, bytes, stream_));
      workspace_bytes_ = bytes;
    }
    return workspace_;
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  Variant variant_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_backend(cudaStream_t stream, Variant variant) {
  return std::make_unique<CudaBackend>(stream, variant);
}

}  // namespace dsa::cuda
