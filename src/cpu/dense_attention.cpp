// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void dense_attention_forward(const AttentionParams&, const AttentionForwardOut&) { throw Error("dense_attention_forward: not implemented"); }
void dense_attention_backward(const AttentionParams&, const AttentionBackwardArgs&) { throw Error("dense_attention_backward: not implemented"); }
}  // namespace dsa::cpu
