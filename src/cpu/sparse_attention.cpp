// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void sparse_attention_forward(const AttentionParams&, const AttentionForwardOut&) { throw Error("sparse_attention_forward: not implemented"); }
void sparse_attention_backward(const AttentionParams&, const AttentionBackwardArgs&) { throw Error("sparse_attention_backward: not implemented"); }
}  // namespace dsa::cpu
