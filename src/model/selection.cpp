// selection.cpp — the model's per-row top-k budget (include/dsa/model.h SelectionPolicy): how a
// policy maps to the op-level TopkPolicy of one layer for one pass, and its short description.
#include <algorithm>
#include <sstream>

#include "common/topk_policy.h"
#include "model/impl.h"

namespace dsa::model {

TopkPolicy layer_topk_policy(const SelectionPolicy& s, int layer, int num_layers, int K) {
  TopkPolicy p = s.rule;
  if (!s.layer_k.empty()) {
    if (s.rule.kind != TopkPolicyKind::kFixed)
      throw Error(std::string("selection policy: a per-layer k table needs the fixed rule, not '") + topk_policy_name(s.rule.kind) + "'");
    if (static_cast<int>(s.layer_k.size()) != num_layers)
      throw Error("selection policy: the per-layer k table has " + std::to_string(s.layer_k.size()) + " entries for " +
                  std::to_string(num_layers) + " layers");
    const int k = s.layer_k[static_cast<size_t>(layer)];
    if (k <= 0) throw Error("selection policy: layer_k[" + std::to_string(layer) + "] = " + std::to_string(k) + " must be > 0");
    p.k_max = k;
  }
  // The pass's budget K is the buffer width: a cap above it (or a floor above the cap) is cut to it,
  // as the budget itself is cut to the longest sequence of the batch.
  const int cap = p.k_max > 0 ? std::min(p.k_max, K) : K;
  p.k_max = cap == K ? 0 : cap;
  p.k_min = std::clamp(p.k_min, 1, cap);
  return p;
}

std::string describe(const SelectionPolicy& s) {
  std::ostringstream o;
  const TopkPolicy& r = s.rule;
  // No commas: the description is a CSV field of dsa eval.
  auto range = [&] { o << " k=" << r.k_min << ".." << (r.k_max > 0 ? std::to_string(r.k_max) : std::string("K")); };
  if (!s.layer_k.empty()) {
    o << "table";
    for (size_t l = 0; l < s.layer_k.size(); ++l) o << (l ? "/" : " ") << s.layer_k[l];
    return o.str();
  }
  switch (r.kind) {
    case TopkPolicyKind::kFixed:
      o << "fixed";
      if (r.k_max > 0) o << " k=" << r.k_max;
      break;
    case TopkPolicyKind::kMass:
      o << "mass p=" << r.p;
      range();
      break;
    case TopkPolicyKind::kEntropy:
      o << "entropy a=" << r.a << " b=" << r.b;
      range();
      break;
  }
  return o.str();
}

void Model::set_selection_policy(const SelectionPolicy& s) {
  // Every check that does not depend on a pass's budget, now rather than at the first pass.
  const int layers = impl_->cfg.num_hidden_layers;
  for (int l = 0; l < layers; ++l) ::dsa::detail::validate_topk_policy(layer_topk_policy(s, l, layers, kMaxTopK), kMaxTopK, "selection policy");
  impl_->selection = s;
}

const SelectionPolicy& Model::selection_policy() const { return impl_->selection; }

}  // namespace dsa::model
