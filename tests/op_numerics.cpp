// PLACEHOLDER — replaced by its owner.
#include "table.h"

namespace dsa::test {
void check_fp8_bf16_scalar(Backend&) { GTEST_SKIP() << "PLACEHOLDER: not implemented yet"; }
void check_fp8_block_quantize(Backend&) { GTEST_SKIP() << "PLACEHOLDER: not implemented yet"; }
void check_cache_records(Backend&) { GTEST_SKIP() << "PLACEHOLDER: not implemented yet"; }
}  // namespace dsa::test
