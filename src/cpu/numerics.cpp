// PLACEHOLDER — replaced by its owner; every function throws until implemented.
#include "dsa/ops.h"

namespace dsa::cpu {
uint8_t fp8_e4m3_from_float(float) { throw Error("fp8_e4m3_from_float: not implemented"); }
float fp8_e4m3_to_float(uint8_t) { throw Error("fp8_e4m3_to_float: not implemented"); }
uint16_t bf16_from_float(float) { throw Error("bf16_from_float: not implemented"); }
float bf16_to_float(uint16_t) { throw Error("bf16_to_float: not implemented"); }
void fp8_block_quantize(const Fp8BlockQuantizeParams&) { throw Error("fp8_block_quantize: not implemented"); }
void fp8_block_dequantize(const Fp8BlockQuantizeParams&) { throw Error("fp8_block_dequantize: not implemented"); }
void mla_cache_pack(const MlaCacheParams&) { throw Error("mla_cache_pack: not implemented"); }
void mla_cache_unpack(const MlaCacheParams&) { throw Error("mla_cache_unpack: not implemented"); }
void indexer_cache_pack(const IndexerCacheParams&) { throw Error("indexer_cache_pack: not implemented"); }
void indexer_cache_unpack(const IndexerCacheParams&) { throw Error("indexer_cache_unpack: not implemented"); }
}  // namespace dsa::cpu
