// common.cpp — argument checks of the torch ops (common.h).
#include "common.h"

#include <c10/core/ScalarType.h>

#include <limits>
#include <sstream>

namespace dsa_torch {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) os << ", ";
    if (shape[i] < 0)
      os << "*";
    else
      os << shape[i];
  }
  os << "]";
  return os.str();
}

std::string dtype_list(std::initializer_list<at::ScalarType> dtypes) {
  std::ostringstream os;
  bool first = true;
  for (auto d : dtypes) {
    os << (first ? "" : " or ") << dtype_name(d);
    first = false;
  }
  return os.str();
}

}  // namespace

// Python's spelling of a dtype (torch.int32, not Int), as the caller wrote it.
std::string dtype_name(at::ScalarType d) {
  switch (d) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kShort: return "torch.int16";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kBool: return "torch.bool";
    case at::kFloat8_e4m3fn: return "torch.float8_e4m3fn";
    default: return std::string("torch.") + c10::toString(d);
  }
}

void check_tensor(const at::Tensor& t, const char* op, const char* name, std::initializer_list<at::ScalarType> dtypes,
                  const std::vector<int64_t>& shape, const at::Tensor* like) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined");
  if (like)
    TORCH_CHECK_VALUE(t.device() == like->device(), op, ": ", name, " is on ", t.device(), " but the other inputs are on ",
                      like->device(), " (every tensor of one call must be on one device)");
  bool dtype_ok = false;
  for (auto d : dtypes) dtype_ok = dtype_ok || t.scalar_type() == d;
  TORCH_CHECK_VALUE(dtype_ok, op, ": ", name, " has dtype ", dtype_name(t.scalar_type()), "; expected ", dtype_list(dtypes));
  bool shape_ok = t.dim() == static_cast<int64_t>(shape.size());
  for (size_t i = 0; shape_ok && i < shape.size(); ++i) shape_ok = shape[i] < 0 || t.size(i) == shape[i];
  TORCH_CHECK_VALUE(shape_ok, op, ": ", name, " has shape ", t.sizes(), "; expected ", shape_string(shape));
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name, " must be contiguous (strides ", t.strides(),
                    "); call .contiguous() first");
}

void check_optional(const std::optional<at::Tensor>& t, const char* op, const char* name,
                    std::initializer_list<at::ScalarType> dtypes, const std::vector<int64_t>& shape,
                    const at::Tensor* like) {
  if (t && t->defined()) check_tensor(*t, op, name, dtypes, shape, like);
}

int to_int(int64_t v, const char* op, const char* name) {
  TORCH_CHECK_VALUE(v >= 0 && v <= std::numeric_limits<int>::max(), op, ": ", name, " = ", v,
                    " must be in [0, 2^31)");
  return static_cast<int>(v);
}

dsa::DType attention_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kBFloat16 ? dsa::DType::kBF16 : dsa::DType::kF32;
}

void set_attention_inputs(dsa::AttentionParams& p, const at::Tensor& q, const at::Tensor& kv) {
  p.dtype = attention_dtype(q);
  if (p.dtype == dsa::DType::kBF16) {
    p.q_bf16 = cptr<uint16_t>(q);
    p.kv_bf16 = cptr<uint16_t>(kv);
  } else {
    p.q = cptr<float>(q);
    p.kv = cptr<float>(kv);
  }
}

}  // namespace dsa_torch
