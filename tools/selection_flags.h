// selection_flags.h — the per-row top-k budget flags (include/dsa/model.h SelectionPolicy) that
// `dsa train` (the sparse stage trains with the policy it will be served with) and `dsa generate`
// share:
//   --topk-policy fixed|mass|entropy|table   --topk-p P (mass)   --topk-min N   --topk-max N
//   --topk-a A --topk-b B (entropy: k = ceil(A·exp(B·H)))   --topk-table K,K,… (one k per layer)
#pragma once

#include <string>
#include <vector>

#include "command.h"
#include "dsa/model.h"

namespace dsa::cli {
// Reads the flags; a flag that does not fit the chosen policy (e.g. --topk-p with fixed) is refused
// by name, as is a missing --topk-table for table. No flag: the default (fixed) policy.
model::SelectionPolicy parse_selection_policy(const Flags& f, const char* command);
}  // namespace dsa::cli
