// selection_flags.cpp — the --topk-policy flag family (tools/selection_flags.h).
#include "selection_flags.h"

#include "run_data.h"

namespace dsa::cli {

model::SelectionPolicy parse_selection_policy(const Flags& f, const char* command) {
  model::SelectionPolicy s;
  const std::string kind = f.get("topk-policy", "fixed");
  const std::string cmd = command;
  auto refuse_unless = [&](bool ok, const char* flag) {
    if (!ok && f.has(flag)) throw Error(cmd + ": --" + flag + " does not apply to --topk-policy " + kind);
  };
  const bool mass = kind == "mass", entropy = kind == "entropy", table = kind == "table";
  if (!mass && !entropy && !table && kind != "fixed")
    throw Error(cmd + ": --topk-policy \"" + kind + "\" is not a policy (fixed, mass, entropy or table)");
  refuse_unless(mass, "topk-p");
  refuse_unless(mass || entropy, "topk-min");
  refuse_unless(entropy, "topk-a");
  refuse_unless(entropy, "topk-b");
  refuse_unless(table, "topk-table");
  refuse_unless(!table, "topk-max");
  s.rule.k_max = f.get_i32("topk-max", 0, 1, kMaxTopK);
  s.rule.k_min = f.get_i32("topk-min", 1, 1, kMaxTopK);
  if (mass) {
    s.rule.kind = TopkPolicyKind::kMass;
    if (!f.has("topk-p")) throw Error(cmd + ": --topk-policy mass needs --topk-p P (the softmax mass each row keeps, in (0, 1])");
    s.rule.p = f.get_double("topk-p", 1.0, 1e-9, 1.0);
  } else if (entropy) {
    s.rule.kind = TopkPolicyKind::kEntropy;
    if (!f.has("topk-a") || !f.has("topk-b"))
      throw Error(cmd + ": --topk-policy entropy needs --topk-a A and --topk-b B (k = ceil(A·exp(B·H)); dsa eval fits them)");
    s.rule.a = f.get_double("topk-a", 1.0, 1e-12, 1e12);
    s.rule.b = f.get_double("topk-b", 1.0, -1e6, 1e6);
  } else if (table) {
    if (!f.has("topk-table")) throw Error(cmd + ": --topk-policy table needs --topk-table K,K,… (one k per layer)");
    for (const auto& item : split_list(f.get("topk-table")))
      s.layer_k.push_back(static_cast<int>(parse_int("flag --topk-table item", item, 1, kMaxTopK)));
  }
  if (s.rule.k_max > 0 && s.rule.k_min > s.rule.k_max)
    throw Error(cmd + ": --topk-min " + std::to_string(s.rule.k_min) + " exceeds --topk-max " + std::to_string(s.rule.k_max));
  return s;
}

}  // namespace dsa::cli
