// moe.h — the MoE layers of DeepSeek-V3 / V3.2 (DeepSeekMoE): routing on the host, routed experts on
// their gathered rows, shared experts; forward and backward (src/model/moe.cpp). Layer algebra:
// docs/model.md "MoE layers".
#pragma once

#include <cstdint>
#include <vector>

#include "model/exec.h"

namespace dsa::model {

// The router's choice for T rows, on the host (DeepSeek-V3's Gate): scores s = sigmoid(z) or
// softmax(z) of the router logits z [T, E] (fp32); the choice ranks c = s + e_score_correction_bias
// (noaux_tc; c = s otherwise); with groups (noaux_tc, group_limited_greedy) a group scores the sum of
// its two best c (noaux_tc) or its best c, topk_group groups are kept and the experts of the others
// excluded; then the num_experts_per_tok best c are chosen. Weights are the chosen experts' s
// (unbiased), renormalised to sum 1 for sigmoid with norm_topk_prob, times routed_scaling_factor.
// Ties go to the smaller group / expert index. Each row's choice depends on that row alone.
struct MoeRouting {
  int64_t T = 0;
  int E = 0, k = 0;
  std::vector<float> score;            // [T, E] s
  std::vector<int32_t> expert;         // [T, k] chosen experts, best first
  std::vector<float> weight;           // [T, k] their weights
  // The T·k (row, choice) pairs grouped by expert (ascending), rows ascending inside an expert:
  std::vector<int64_t> offset;         // [E + 1] expert e's pairs are [offset[e], offset[e + 1])
  std::vector<int32_t> pair_row;       // [T·k] the row of each pair
  std::vector<int32_t> pair_choice;    // [T·k] its index t·k + j into expert / weight
};
// bias: e_score_correction_bias [E] (noaux_tc), else null. Throws dsa::Error on a non-finite logit.
MoeRouting moe_route(const Config& c, const float* logits, const float* bias, int64_t T);
// d logits [T, E] from d weight [T, k] (through the scaling, the renormalisation and the scoring; the
// choice itself is not differentiable).
std::vector<float> moe_route_backward(const Config& c, const MoeRouting& r, const std::vector<float>& dweight);

// Floats per row that moe_forward allocates in the executor's memory (0 without MoE layers).
int64_t moe_row_floats(const Config& c);

// What a MoE layer's forward keeps for its backward.
struct MoeActs {
  MoeRouting route;
  IBuf rows;                 // [T·k] pair_row in executor memory
  FBuf xg, g, u, a, y;       // per pair: gathered input [T·k, D], expert SwiGLU [T·k, Fm] x3, output [T·k, D]
  FBuf sg, su, sa;           // shared experts' SwiGLU [T, n_shared·Fm] x3 (empty without shared experts)
};
// out [T, D] = Σ_j w_j · expert_j(hn) + shared_experts(hn), for T rows of hn [T, D] in `ex`'s memory.
// The experts run on their gathered rows, the weighted outputs are added in ascending expert order, so
// a row's result does not depend on the other rows (with `ex`'s exact matmuls: bitwise).
// keep: filled for moe_backward when not null. round_bf16 (the session's Numerics::kReference, the
// reference's Expert / MLP): each expert's and the shared experts' gate and up outputs, SwiGLU product
// and down output are rounded to bf16; the weighted routed outputs are summed in fp32 from 0 in ascending
// expert order and the shared experts' output is added last (the caller rounds the sum).
void moe_forward(Exec& ex, const Model::Impl& m, int l, const float* hn, int64_t T, float* out, MoeActs* keep,
                 bool round_bf16 = false);
// Inverts moe_forward: gradients into the experts, the shared experts and the router weight (the
// bias gets none); dhn [T, D] = d hn (overwritten).
void moe_backward(Exec& ex, const Model::Impl& m, int l, const float* hn, int64_t T, const MoeActs& A, const float* dout,
                  float* dhn);

}  // namespace dsa::model
