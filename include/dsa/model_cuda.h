// dsa/model_cuda.h — the model's training and evaluation passes on a GPU (library dsa::dsa_cuda).
#pragma once

#include "dsa/model.h"

namespace dsa::cuda {

// Runs m's forward_backward / evaluate / logits on GPU `device` from now on: the model code of
// src/model/forward.cpp over the dsa::cuda ops (fp32; cuBLAS without TF32 for the matmuls), with
// parameter and gradient mirrors and one stream of its own. Each pass copies the parameters in and
// the gradients out (the optimizer stays on the host), so results equal the CPU's up to fp32
// rounding order, and reruns are bitwise equal. Throws dsa::Error when no such device exists.
void attach_model(model::Model& m, int device = 0);

// CUDA devices this process sees (0 without a driver or a device; never throws).
int device_count();

}  // namespace dsa::cuda
