// dsa/cuda_ops.h — the CUDA backend: the ops of dsa/ops.h on NVIDIA GPUs (sm_80 … sm_90a).
//
// Same parameter structs, shapes, math and conventions as dsa::cpu (ops.h is the contract); every
// pointer in a params struct is a DEVICE pointer, every call is asynchronous on `stream`, does no
// host synchronisation and no allocation (ops that need scratch memory take a workspace sized by
// their *_workspace_bytes query), so every op is CUDA-graph safe.
// Host-side validation covers what the host can see (null pointers, shapes, K range) and throws
// dsa::Error naming the argument before any launch. Data-dependent checks the CPU backend makes
// (ks > ke, indices outside [0, S)) cannot be made without a sync: the kernels treat such a key
// range as empty and such an index as invalid (FlashMLA's convention), never reading out of bounds.
#pragma once

#include "dsa/ops.h"

typedef struct CUstream_st* cudaStream_t;

namespace dsa::cuda {
// Declarations are added op by op by src/cuda/<op>.cu owners (see README "adding an op").
}  // namespace dsa::cuda
