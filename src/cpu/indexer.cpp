// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
void indexer_quantize_fp8(const IndexerQuantizeParams&) { throw Error("indexer_quantize_fp8: not implemented"); }
void indexer_logits(const IndexerParams&, float*) { throw Error("indexer_logits: not implemented"); }
void indexer_topk(const IndexerParams&, int, int32_t*) { throw Error("indexer_topk: not implemented"); }
void indexer_backward(const IndexerBackwardParams&) { throw Error("indexer_backward: not implemented"); }
}  // namespace dsa::cpu
