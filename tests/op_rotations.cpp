// PLACEHOLDER — replaced by its owner.
#include "table.h"

namespace dsa::test {
void check_hadamard_transform(Backend&) { GTEST_SKIP() << "PLACEHOLDER: not implemented yet"; }
void check_rope(Backend&) { GTEST_SKIP() << "PLACEHOLDER: not implemented yet"; }
}  // namespace dsa::test
