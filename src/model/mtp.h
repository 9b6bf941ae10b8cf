// mtp.h — the multi-token-prediction (MTP) module's own steps (DeepSeek-V3 §2.2): the input that
// joins a position's main-model hidden state with the embedding of the token after it, and the
// output head. The module's decoder layer between them is an ordinary layer (Model::Impl::layers[
// num_hidden_layers + k]) that the session runs over the module's own caches. docs/model.md
// "Multi-token prediction" has the definition.
#pragma once

#include <cstdint>

#include "model/exec.h"
#include "model/impl.h"

namespace dsa::model {

// x [n, D] = eh_proj · [enorm(embed(tokens[r])) ; hnorm(hidden[r])] of module k, per row r at
// position first + r. hidden [n, D]: the main model's final hidden state (after model.norm) at the
// row's position; tokens[r]: the token at the position after it. The row at position 0 takes a zero
// embedding (vLLM's DeepSeek MTP layer masks it). Scratch: e [n, D], cat [n, 2D], rstd [n].
// round_bf16 (the session's Numerics::kReference): the two norms' outputs and x are rounded to bf16.
void mtp_input(Exec& ex, const Model::Impl& m, int k, const int32_t* tokens, const float* hidden, int64_t first, int64_t n,
               float* e, float* cat, float* rstd, float* x, bool round_bf16 = false);

// logits [n, V] = shared_head.norm(x) · lm_headᵀ of module k (the head is the main model's).
// Scratch: xn [n, D], rstd [n]. round_bf16: the norm's output is rounded to bf16 (the head runs in fp32).
void mtp_logits(Exec& ex, const Model::Impl& m, int k, const float* x, int64_t n, float* xn, float* rstd, float* logits,
                bool round_bf16 = false);

}  // namespace dsa::model
