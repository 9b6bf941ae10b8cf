// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void indexer_kl_forward(const IndexerKlParams&, float*) { throw Error("indexer_kl_forward: not implemented"); }
void indexer_kl_backward(const IndexerKlParams&, const float*, float*) { throw Error("indexer_kl_backward: not implemented"); }
}  // namespace dsa::cpu
