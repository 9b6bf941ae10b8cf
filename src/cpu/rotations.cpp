// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void hadamard_transform(float*, int64_t, int) { throw Error("hadamard_transform: not implemented"); }
void rope_forward(const RopeParams&) { throw Error("rope_forward: not implemented"); }
void rope_backward(const RopeParams&) { throw Error("rope_backward: not implemented"); }
void rope_inv_freq(int, double, const YarnScaling&, float*) { throw Error("rope_inv_freq: not implemented"); }
double yarn_softmax_mscale(const YarnScaling&) { throw Error("yarn_softmax_mscale: not implemented"); }
}  // namespace dsa::cpu
