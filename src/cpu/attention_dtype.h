// attention_dtype.h — the CPU attention ops on bf16 inputs: q_bf16 / kv_bf16 are widened to fp32 once
// (bf16 → fp32 is exact), then the fp32 specification runs. The result is the exact math of the bf16
// values, the oracle the GPU's bf16 tensor-core variants are checked against.
#pragma once

#include <vector>

#include "common/check.h"
#include "dsa/ops.h"

namespace dsa::cpu::attn {

// Holds the widened copies; fp32(p) returns p itself for fp32 inputs, else p with q/kv pointing at them.
class Fp32Inputs {
 public:
  const AttentionParams& fp32(const AttentionParams& p, const char* op) {
    if (p.dtype == DType::kF32) {
      if (p.q_bf16 != nullptr || p.kv_bf16 != nullptr)
        detail::fail(op, "q_bf16 / kv_bf16 are set but dtype is fp32 (set dtype = bf16, or pass q / kv)");
      return p;
    }
    detail::require_ptr(p.q_bf16, op, "q_bf16 (dtype bf16)");
    detail::require_ptr(p.kv_bf16, op, "kv_bf16 (dtype bf16)");
    if (p.q != nullptr || p.kv != nullptr) detail::fail(op, "q / kv are set but dtype is bf16 (pass q_bf16 / kv_bf16)");
    detail::require_non_negative(p.T, op, "T");
    detail::require_non_negative(p.S, op, "S");
    detail::require_positive(p.H, op, "H");
    detail::require_positive(p.Dqk, op, "Dqk");
    q_ = widen(p.q_bf16, static_cast<size_t>(p.T) * p.H * p.Dqk);
    kv_ = widen(p.kv_bf16, static_cast<size_t>(p.S) * p.Dqk);
    p32_ = p;
    p32_.dtype = DType::kF32;
    p32_.q = q_.data();
    p32_.kv = kv_.data();
    p32_.q_bf16 = p32_.kv_bf16 = nullptr;
    return p32_;
  }

  static std::vector<float> widen(const uint16_t* x, size_t n) {
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(x[i]);
    return out;
  }

 private:
  std::vector<float> q_, kv_;
  AttentionParams p32_;
};

}  // namespace dsa::cpu::attn
