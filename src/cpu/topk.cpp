// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void topk_select(const TopkParams&) { throw Error("topk_select: not implemented"); }
}  // namespace dsa::cpu
