// common.h — argument checks and backend selection shared by the torch ops of the dsa extension.
//
// Every op checks each tensor argument (device, dtype, rank, shape, contiguity) before it allocates
// or runs anything, and reports a bad one as a Python ValueError naming the op and the argument; a
// dsa::Error from the library (data-dependent checks, e.g. an index out of range) becomes a
// ValueError too. Outputs are always fresh tensors, so a refused call writes nothing.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "dsa/backend.h"
#include "dsa/ops.h"

namespace dsa_torch {

// Checks tensor `name` of op `op`: on the device of `like` (when given), one of `dtypes`, rank
// shape.size(), each dimension equal to shape[i] (or anything where shape[i] < 0), contiguous.
void check_tensor(const at::Tensor& t, const char* op, const char* name, std::initializer_list<at::ScalarType> dtypes,
                  const std::vector<int64_t>& shape, const at::Tensor* like = nullptr);
void check_optional(const std::optional<at::Tensor>& t, const char* op, const char* name,
                    std::initializer_list<at::ScalarType> dtypes, const std::vector<int64_t>& shape,
                    const at::Tensor* like = nullptr);

// Python's spelling of a dtype ("torch.int32").
std::string dtype_name(at::ScalarType d);

// A size that the library takes as int: refused by name when it does not fit or is negative.
int to_int(int64_t v, const char* op, const char* name);

// The backend that runs on the tensor's device: the CPU backend, or for a CUDA tensor the CUDA backend
// on the current torch stream of that device (one per device and stream, created on first use).
dsa::Backend& backend_for(const at::Tensor& t);

// Runs body, turning a dsa::Error into a ValueError that keeps the library's message.
template <typename Body>
void run(Body&& body) {
  try {
    body();
  } catch (const dsa::Error& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

template <typename T>
const T* cptr(const at::Tensor& t) {
  return static_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mptr(at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}
template <typename T>
const T* optr(const std::optional<at::Tensor>& t) {
  return t && t->defined() ? static_cast<const T*>(t->data_ptr()) : nullptr;
}

// The attention dtype of q / kv (float32 or bfloat16; the CPU computes bf16 exactly).
dsa::DType attention_dtype(const at::Tensor& q);

// Fills the q / kv pointers of p from tensors in p.dtype.
void set_attention_inputs(dsa::AttentionParams& p, const at::Tensor& q, const at::Tensor& kv);

}  // namespace dsa_torch
