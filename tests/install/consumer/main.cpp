// Selects the top-2 keys of one causal row through the installed library and checks the answer.
#include <cstdio>

#include "dsa/ops.h"

int main() {
  const float logits[4] = {0.5f, 2.0f, -1.0f, 2.0f};
  const int32_t ks[1] = {0}, ke[1] = {4};
  int32_t idx[2] = {0, 0};
  dsa::TopkParams p;
  p.T = 1;
  p.S = 4;
  p.K = 2;
  p.logits = logits;
  p.ks = ks;
  p.ke = ke;
  p.indices = idx;
  dsa::cpu::topk_select(p);
  // Ties go to the smaller key index: 1 before 3.
  const bool ok = idx[0] == 1 && idx[1] == 3;
  std::printf("consumer: top-2 = {%d, %d} %s\n", idx[0], idx[1], ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
