// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void indexer_logits_paged(const PagedIndexerParams&, float*) { throw Error("indexer_logits_paged: not implemented"); }
void paged_to_physical(int, int, int, const int32_t*, int, int, int32_t*) { throw Error("paged_to_physical: not implemented"); }
void sparse_attention_decode(const SparseDecodeParams&) { throw Error("sparse_attention_decode: not implemented"); }
}  // namespace dsa::cpu
