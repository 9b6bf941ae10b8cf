// eval_dynamic_k.h — the per-row k part of `dsa eval` (EvalOptions::dynamic_k) and the pieces of
// eval.cpp it shares. Not part of the public API.
#pragma once

#include <filesystem>
#include <utility>
#include <vector>

#include "dsa/train.h"

namespace dsa::train::detail {

// eval.cpp: a timed Session at `context` (prefill in chunks, then decode_tokens greedy steps).
EvalReport::SpeedRow time_session(const model::Model& m, model::AttentionMode mode, int k, const std::vector<int32_t>& text,
                                  int context, int decode_tokens, int chunk, const model::SelectionPolicy& selection);
// eval.cpp: whole-key passkey hits of DSA at budget k under the model's selection policy: {correct, trials}.
std::pair<int, int> passkey_tally(const model::Model& m, const std::vector<PasskeySample>& samples, int k);

// Fills r.dynamic_k, the entropy fit and r.dynamic_speed; writes dynamic_k.csv, dynamic_k_by_layer.csv,
// dynamic_speed.csv and (with plots) ppl_vs_avg_k.png into dir. The model's policy is restored.
void evaluate_dynamic_k(model::Model& m, const EvalOptions& o, const Corpus& corpus, const Tokenizer& tok, const Loader& loader,
                        const model::Batch& val, const std::vector<int>& passkey_lengths, int context,
                        const std::filesystem::path& dir, EvalReport& r);
// The per-row k table of format_report ("" when r.dynamic_k is empty).
std::string format_dynamic_k(const EvalReport& r);

}  // namespace dsa::train::detail
