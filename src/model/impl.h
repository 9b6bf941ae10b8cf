// impl.h — Model::Impl shared by the model's source files (params, forward/backward, session).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dsa/model.h"

namespace dsa::model {

class Exec;       // model/exec.h: where a pass runs
class HostPool;   // model/exec.h: host buffers reused across CPU passes

// Indices into params()/grads() of one layer's tensors. A dense layer has gate/up/down; a MoE layer
// (Config::is_moe_layer) has the router, its bias (noaux_tc), the routed experts (expert e's gate, up,
// down at expert0 + kExpertTensors·e + 0, 1, 2) and the shared experts; the others are -1.
struct LayerParams {
  static constexpr int kExpertTensors = 3;   // gate_proj, up_proj, down_proj
  int input_norm, q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b, o;
  int idx_wq, idx_wk, idx_norm_w, idx_norm_b, idx_w;
  int post_norm;
  int gate = -1, up = -1, down = -1;
  bool moe = false;
  int router = -1, router_bias = -1, expert0 = -1;
  int shared_gate = -1, shared_up = -1, shared_down = -1;
  int expert_gate(int e) const { return expert0 + kExpertTensors * e; }
  int expert_up(int e) const { return expert0 + kExpertTensors * e + 1; }
  int expert_down(int e) const { return expert0 + kExpertTensors * e + 2; }
};

// Indices of multi-token-prediction module k's own tensors (checkpoint layer num_hidden_layers + k).
// Its decoder layer is layers[num_hidden_layers + k]; its embedding and output head are the main
// model's embed / lm_head (the checkpoint's copies are checked against them on load).
struct MtpParams {
  int enorm, hnorm, eh_proj, head_norm;   // enorm, hnorm [D]; eh_proj [D, 2D]; shared_head.norm [D]
};

struct Model::Impl {
  Config cfg;
  std::vector<Tensor> params, grads;
  // num_hidden_layers main layers, then the num_nextn_predict_layers MTP modules' decoder layers
  std::vector<LayerParams> layers;
  std::vector<MtpParams> mtp;
  int embed = -1, final_norm = -1, lm_head = -1;   // lm_head = embed when tied
  int first_mtp_param = 0;                         // params [first_mtp_param, size) are the MTP modules'
  std::vector<float> inv_freq;                     // [qk_rope_head_dim / 2], YaRN-blended
  float scale = 0.0f;                              // main softmax scale
  // The executor of forward_backward / evaluate / logits when not the CPU (Model::set_exec); recall
  // and the MHA oracle run on the CPU; a Session has an executor of its own.
  std::shared_ptr<Exec> exec;
  // The buffers of CPU passes, reused from pass to pass (created with the Impl).
  std::shared_ptr<HostPool> host_pool;
  SelectionPolicy selection;                       // Model::set_selection_policy
  WeightDtype weight_dtype = WeightDtype::kF32;    // Model::weight_dtype (set by load)

  explicit Impl(const Config& c);
  const float* P(int i) const { return params[i].data.data(); }
  float* G(int i) { return grads[i].data.data(); }
};

// Derived sizes used everywhere.
struct Dims {
  int D, H, qr, kvr, dn, dr, dv, dq, Dm, F, V, HI, DI;
  explicit Dims(const Config& c)
      : D(c.hidden_size), H(c.num_attention_heads), qr(c.q_lora_rank), kvr(c.kv_lora_rank),
        dn(c.qk_nope_head_dim), dr(c.qk_rope_head_dim), dv(c.v_head_dim), dq(c.qk_head_dim()),
        Dm(c.mqa_dim()), F(c.intermediate_size), V(c.vocab_size), HI(c.index_n_heads),
        DI(c.index_head_dim) {}
};

// Matmuls of the projections. exact = false: BLAS (training, evaluation). exact = true: every output
// element is one dot product in a fixed order (8 interleaved partial sums, then a fixed tree), so a
// row's result is the same whatever the number of rows in the call — the session uses it, which
// makes chunked prefill ≡ one-shot and decode ≡ prefill row bitwise.
//   mm_xwt: y[n, o] = Σ_i x[n·ldx + i] · W[o·ldw + i]   (W [O, I], the HF linear layout)
//   mm_xw:  y[n, o] = Σ_i x[n·ldx + i] · W[i·ldw + o]   (W [I, O])
void mm_xwt(bool exact, int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
            int64_t ldy);
void mm_xw(bool exact, int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
           int64_t ldy);

// Projections shared by training and the session (src/model/forward.cpp), run by `ex` (pointers in its
// memory, parameters ex.param(), RoPE tables ex.inv_freq(); the session passes an exact CPU executor).
// Main-path query/key latents of T rows of the normalised layer input xn [T, D]:
//   qa, qan (+ rstd), q [T,H,dq] with RoPE, kva [T, kvr+dr] (c raw | k_pe roped), c_raw, cn (+ rstd),
//   qm [T,H,Dm] (absorbed), kvm [T,Dm].
void mla_project(Exec& ex, const Model::Impl& m, int l, const float* xn, int64_t T, const int32_t* pos, float* qa,
                 float* rstd_qa, float* qan, float* q, float* kva, float* c_raw, float* rstd_kv, float* cn,
                 float* qm, float* kvm, bool round_bf16 = false);
// Indexer q/k/w of T rows (fp32, after RoPE and Hadamard; w with the HI^-0.5·DI^-0.5 scale):
//   kpre [T,DI] (wk output, for LayerNorm backward), kmean/krstd [T].
void indexer_project(Exec& ex, const Model::Impl& m, int l, const float* xn, const float* qan, int64_t T,
                     const int32_t* pos, float* iq, float* kpre, float* kmean, float* krstd, float* ik, float* iw,
                     bool round_bf16 = false);
// The main attention of a layer in MQA mode over the latents: qm [T,H,Dm] against kvm [S,Dm] (V = the
// first kvr dims) with the model's explicit softmax scale. The caller adds the key set: indices/K
// (sparse) or ks/ke (dense).
inline AttentionParams mqa_attention_params(const Model::Impl& m, const Dims& d, int T, int S, const float* qm,
                                            const float* kvm) {
  AttentionParams ap;
  ap.T = T;
  ap.S = S;
  ap.H = d.H;
  ap.Dqk = d.Dm;
  ap.Dv = d.kvr;
  ap.scale = m.scale;
  ap.q = qm;
  ap.kv = kvm;
  return ap;
}

// out[t,h] = o_lat[t,h] · W_UV[h]ᵀ → o [T, H·dv]
void absorb_out(Exec& ex, const Model::Impl& m, int l, const float* olat, int64_t T, float* o);
// round_bf16 = true (the session's Numerics::kReference): mla_project and indexer_project round each
// intermediate to bf16 where DeepSeek's reference inference holds a bf16 tensor (dsa/model.h Numerics):
// every linear output, the norms, RoPE and Hadamard outputs and the absorbed query latent; the indexer
// head weights stay fp32, scaled by HI^-0.5 and then DI^-0.5 in the reference's order.

}  // namespace dsa::model
