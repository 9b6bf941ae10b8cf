// dsa/model_cuda.h — the model's training and evaluation passes on a GPU (library dsa::dsa_cuda).
#pragma once

#include <memory>

#include "dsa/model.h"

namespace dsa::cuda {

// Runs m's forward_backward / evaluate / logits on GPU `device` from now on: the model code of
// src/model/forward.cpp over the dsa::cuda ops (fp32; cuBLAS without TF32 for the matmuls), with
// parameter and gradient mirrors and one stream of its own. Each pass copies the parameters in and
// the gradients out (the optimizer stays on the host), so results equal the CPU's up to fp32
// rounding order, and reruns are bitwise equal. Throws dsa::Error when no such device exists.
void attach_model(model::Model& m, int device = 0);

// An inference Session (dsa/model.h) on GPU `device`: the model's parameters, the caches (the
// SessionOptions formats: FP8 656 B MLA records / bf16 / fp32 latents, 132 B FP8 indexer pages) and
// every step buffer live in device memory on a stream of the session's own. Each step runs the
// session's code over the CUDA ops with their default variants and copies only the step's token ids,
// positions and block tables in and the requested logits out:
//   * projections: cuBLAS GEMMs over bf16 copies of the weight matrices (weights = kBF16, the default;
//     fp32 accumulation) or the fp32 weights (kF32: fp32 GEMMs, the reference);
//   * prefill chunks (more than 2 rows): the fused indexer + top-k over the chunk's contiguous keys
//     (FP8 keys gathered from the pages) and, over a bf16 cache, the tensor-core sparse prefill kernel;
//   * decode steps (1 or 2 rows): paged indexer logits, top-k, the sparse decode kernel (q in bf16).
// The Model must outlive the Session. Throws dsa::Error naming the device when it does not exist, or
// naming the bytes when the model and caches do not fit its free memory (before anything is allocated).
std::unique_ptr<model::Session> open_session(const model::Model& m, const model::SessionOptions& options, int device = 0,
                                             DType weights = DType::kBF16);
// The same for a BatchSession (many sequences over one page pool, batched decode steps).
std::unique_ptr<model::BatchSession> open_batch_session(const model::Model& m, const model::SessionOptions& options,
                                                        int device = 0, DType weights = DType::kBF16);

// CUDA devices this process sees (0 without a driver or a device; never throws).
int device_count();

}  // namespace dsa::cuda
