// mtp.cpp — the multi-token-prediction module's input projection and output head (mtp.h).
#include "model/mtp.h"

namespace dsa::model {

void mtp_input(Exec& ex, const Model::Impl& m, int k, const int32_t* tokens, const float* hidden, int64_t first, int64_t n,
               float* e, float* cat, float* rstd, float* x, bool round_bf16) {
  const Dims d(m.cfg);
  const MtpParams& p = m.mtp[static_cast<size_t>(k)];
  const float eps = static_cast<float>(m.cfg.rms_norm_eps);
  const int64_t D = d.D, D2 = 2LL * d.D;
  Backend& ops = ex.ops();
  ops.embedding_forward(tokens, ex.param(m.embed), e, n, d.V, d.D);
  if (first == 0) ex.scale(e, 0.0f, D);   // position 0: no embedding (enorm(0) = 0)
  // [enorm(e) | hnorm(h)] per row: the normalised embedding first, as the checkpoint's eh_proj expects
  ops.rmsnorm_forward(e, ex.param(p.enorm), x, rstd, n, d.D, eps);
  if (round_bf16) ex.round_bf16(x, n * D);
  ex.copy_cols(cat, D2, x, D, n, d.D);
  ops.rmsnorm_forward(hidden, ex.param(p.hnorm), x, rstd, n, d.D, eps);
  if (round_bf16) ex.round_bf16(x, n * D);
  ex.copy_cols(cat + D, D2, x, D, n, d.D);
  ex.mm_xwt(n, d.D * 2, d.D, cat, D2, ex.param(p.eh_proj), D2, x, D);
  if (round_bf16) ex.round_bf16(x, n * D);
}

void mtp_logits(Exec& ex, const Model::Impl& m, int k, const float* x, int64_t n, float* xn, float* rstd, float* logits,
                bool round_bf16) {
  const Dims d(m.cfg);
  ex.ops().rmsnorm_forward(x, ex.param(m.mtp[static_cast<size_t>(k)].head_norm), xn, rstd, n, d.D,
                           static_cast<float>(m.cfg.rms_norm_eps));
  if (round_bf16) ex.round_bf16(xn, n * d.D);
  ex.mm_xwt(n, d.D, d.V, xn, d.D, ex.param(m.lm_head), d.D, logits, d.V);
}

}  // namespace dsa::model
