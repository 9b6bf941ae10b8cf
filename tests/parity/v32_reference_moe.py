#!/usr/bin/env python3
"""The MoE + MTP parity fixtures: v32_reference.py's model of DeepSeek-V3.2's reference inference
numerics, extended to a tiny V3.2 with DeepSeekMoE layers and one multi-token-prediction module.

What it adds (DeepSeek-V3.2-Exp inference/model.py Gate / Expert / MoE, in the reference's dtypes):
  * Gate: z = x · gateᵀ in fp32 (x the bf16 post-attention norm output, the bf16 weight read as fp32),
    s = sigmoid(z), choice c = s + e_score_correction_bias (fp32); group score = the sum of a group's
    two best c, keep topk_group groups, then the num_experts_per_tok best c of their experts;
    weights = s of the chosen / their sum (norm_topk_prob with sigmoid) · routed_scaling_factor (fp32);
  * Expert (and the shared experts' MLP): bf16 gate / up linear outputs, silu(gate) · up in fp32 rounded
    to bf16, bf16 down output;
  * MoE: y = 0 (fp32); for each expert in ascending index, y[rows] += expert(x[rows]) · weight (the bf16
    output times the fp32 weight, summed in fp32); y += shared_experts(x) (fp32); the output bf16(y);
  * MTP module (the definition vLLM's deepseek_mtp.py runs, docs/model.md "Multi-token prediction"):
    at position j, e = embed(token j + 1) (0 at j = 0), h_j = the main model's final hidden state after
    model.norm (bf16); x = eh_proj([enorm(e) ; hnorm(h_j)]) (bf16 norm outputs, bf16 linear output);
    one decoder layer (layer index num_hidden_layers: MoE, its own caches, first-layer residual rule);
    logits = shared_head.norm(x) (bf16) · lm_headᵀ in fp32. It runs as the reference runs a prefill
    (MHA mode) over positions 0 … T − 2, dense or with the DSA selection of index_topk keys.

Output directory (default tests/data/v32_parity_moe): the checkpoint (official V3.2 key names: the
layers' mlp.gate.weight, mlp.gate.e_score_correction_bias (F32, as the official checkpoint stores it),
mlp.experts.{e}.*_proj, mlp.shared_experts.*_proj; the module's model.layers.{L}.* with enorm, hnorm,
eh_proj, shared_head.norm, and the copies embed_tokens / shared_head.head) and fixtures.safetensors:
v32_reference.py's tensors plus dense_mtp_logits / dsa_mtp_logits [T − P, V]: the module's logits at
positions P − 1 … T − 2 (each given the token after it; P = prefill_len) from a module prefill over the
main prefill's hidden states, and dense_mtp_decode_logits / dsa_mtp_decode_logits [T − P, V]: the same
positions in the form a session drafts in (see run()).

Run: /path/to/venv/bin/python tests/parity/v32_reference_moe.py [--out DIR]
"""
import argparse
import copy
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import v32_reference as v32
from v32_reference import bf, linear, rmsnorm

SEED = 20251209
MOE_CONFIG = copy.deepcopy(v32.CONFIG)
MOE_CONFIG.update({
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,    # layer 0 dense, layers 1, 2 (and the MTP layer 3) MoE
    "num_attention_heads": 2,      # fewer heads and MLP widths than the dense fixture: ≤ ~3 MB in all
    "intermediate_size": 128,
    "moe_intermediate_size": 16,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 4,
    "topk_group": 2,
    "moe_layer_freq": 1,
    "ep_size": 1,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "num_nextn_predict_layers": 1,
})
BIAS_STD = 0.05        # e_score_correction_bias: of the order of the sigmoid scores' spread, so it moves choices
GROUP_SCORE_TOP = 2    # noaux_tc: a group scores the sum of its two best experts
NOISE_BOUND = 0.05     # printed: rows whose logits differ by more than bf16 noise (a routing or selection flip)


def make_moe_weights(cfg, seed):
    """v32_reference's dense weights for the main layers and the MTP layer (index L), the MLP of each
    MoE layer replaced by a router, experts and shared experts, plus the MTP module's own tensors."""
    L, D, E = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["n_routed_experts"]
    Fm, Fs = cfg["moe_intermediate_size"], cfg["n_shared_experts"] * cfg["moe_intermediate_size"]
    with_mtp = dict(cfg, num_hidden_layers=L + cfg["num_nextn_predict_layers"])
    w = v32.make_weights(with_mtp, seed)
    g = torch.Generator().manual_seed(seed + 2)

    def mat(rows, cols, gain=1.0):
        return bf(torch.randn(rows, cols, generator=g) * (gain / cols ** 0.5))

    def norm(n):
        return bf(1.0 + 0.1 * torch.randn(n, generator=g))

    for i in range(cfg["first_k_dense_replace"], L + cfg["num_nextn_predict_layers"]):
        p = f"model.layers.{i}.mlp."
        for name in ("gate_proj", "up_proj", "down_proj"):
            del w[p + name + ".weight"]
        w[p + "gate.weight"] = mat(E, D)
        w[p + "gate.e_score_correction_bias"] = BIAS_STD * torch.randn(E, generator=g)   # fp32
        for e in range(E):
            x = f"{p}experts.{e}."
            w[x + "gate_proj.weight"], w[x + "up_proj.weight"] = mat(Fm, D), mat(Fm, D)
            w[x + "down_proj.weight"] = mat(D, Fm, 0.5)
        x = p + "shared_experts."
        w[x + "gate_proj.weight"], w[x + "up_proj.weight"] = mat(Fs, D), mat(Fs, D)
        w[x + "down_proj.weight"] = mat(D, Fs, 0.5)
    p = f"model.layers.{L}."
    w[p + "enorm.weight"], w[p + "hnorm.weight"] = norm(D), norm(D)
    w[p + "eh_proj.weight"] = mat(D, 2 * D)
    w[p + "shared_head.norm.weight"] = norm(D)
    w[p + "embed_tokens.weight"] = w["model.embed_tokens.weight"].clone()
    w[p + "shared_head.head.weight"] = w["lm_head.weight"].clone()
    return w


class MoeReference(v32.Reference):
    def mlp(self, l, xn):
        if l < self.c["first_k_dense_replace"]:
            return super().mlp(l, xn)
        c, w = self.c, self.w
        p = f"model.layers.{l}.mlp."
        T, E, G = xn.shape[0], c["n_routed_experts"], c["n_group"]
        # Gate (fp32)
        s = torch.sigmoid(xn @ w[p + "gate.weight"].T)
        choice = (s + w[p + "gate.e_score_correction_bias"]).view(T, G, E // G)
        group = choice.topk(GROUP_SCORE_TOP, dim=-1).values.sum(-1)
        kept = group.topk(c["topk_group"], dim=-1).indices
        dropped = torch.ones(T, G, dtype=torch.bool).scatter_(1, kept, False)
        choice = choice.masked_fill(dropped[..., None], float("-inf")).flatten(1)
        chosen = choice.topk(c["num_experts_per_tok"], dim=-1).indices
        weight = s.gather(1, chosen)
        weight = weight / weight.sum(-1, keepdim=True) * c["routed_scaling_factor"]

        def expert(prefix, x):
            gx, ux = linear(x, w[prefix + "gate_proj.weight"]), linear(x, w[prefix + "up_proj.weight"])
            return linear(bf(F.silu(gx) * ux), w[prefix + "down_proj.weight"])

        y = torch.zeros(T, xn.shape[1])
        for e in range(E):
            rows, slot = torch.where(chosen == e)
            if len(rows):
                y[rows] += expert(f"{p}experts.{e}.", xn[rows]) * weight[rows, slot, None]
        y += expert(p + "shared_experts.", xn)
        return bf(y)

    def mtp(self, next_tokens, hidden, start, cache):
        """The MTP module's logits [T, V] at positions start…, given the token after each position and the
        main model's final hidden states there; fills the module's cache (layer index L)."""
        c, w = self.c, self.w
        L, eps = c["num_hidden_layers"], c["rms_norm_eps"]
        p = f"model.layers.{L}."
        pos = torch.arange(start, start + len(next_tokens))
        e = w["model.embed_tokens.weight"][torch.tensor(next_tokens)].clone()
        e[pos == 0] = 0.0                                            # vLLM masks position 0's embedding
        cat = torch.cat([rmsnorm(e, w[p + "enorm.weight"], eps), rmsnorm(hidden, w[p + "hnorm.weight"], eps)], -1)
        x = linear(cat, w[p + "eh_proj.weight"])
        h, residual = self.layer(L, x, None, pos, start, cache)
        return rmsnorm(h + residual, w[p + "shared_head.norm.weight"], eps) @ w["lm_head.weight"].T


def run(cfg, w, tokens, topk):
    """v32_reference.run's prefill / decode logits and selections, plus the MTP module's logits at
    positions P − 1 … T − 2 in two forms: a prefill of the module over the main prefill's hidden states
    (positions 0 … T − 2), and the form a session drafts in: after the main prefill of P tokens, the
    module's prefill over positions 0 … P − 1, then one main decode step and one module decode step
    per position (each on the decode steps' hidden states)."""
    L, P = cfg["num_hidden_layers"], v32.PREFILL_LEN
    layers = L + cfg["num_nextn_predict_layers"]
    ref = MoeReference(cfg, w, topk)
    cache = v32.Cache(cfg, layers)
    prefill = ref.forward(tokens, 0, cache)
    sel = [m.clone() for m in ref.selections]
    mtp = ref.mtp(tokens[1:], ref.hidden[:-1], 0, cache)[P - 1:]
    cache = v32.Cache(cfg, layers)
    ref.forward(tokens[:P], 0, cache)
    mtp_decode = [ref.mtp(tokens[1:P + 1], ref.hidden, 0, cache)[-1]]
    decode, dec_sel = [], [[] for _ in range(L)]
    for t in range(P, len(tokens)):
        decode.append(ref.forward([tokens[t]], t, cache)[0])
        for l, m in enumerate(ref.selections[:L]):
            dec_sel[l].append(F.pad(m[0], (0, len(tokens) - m.shape[1])))
        if t + 1 < len(tokens):
            mtp_decode.append(ref.mtp([tokens[t + 1]], ref.hidden, t, cache)[0])
    return (prefill, sel, torch.stack(decode), [torch.stack(rows) for rows in dec_sel], mtp,
            torch.stack(mtp_decode))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "v32_parity_moe"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    cfg = MOE_CONFIG
    w = make_moe_weights(cfg, SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    tokens = torch.randint(0, cfg["vocab_size"], (v32.SEQ_LEN,), generator=g).tolist()
    P = v32.PREFILL_LEN

    dense, _, dense_dec, _, dense_mtp, dense_mtp_dec = run(cfg, w, tokens, v32.SEQ_LEN)
    dsa, sel, dsa_dec, dec_sel, dsa_mtp, dsa_mtp_dec = run(cfg, w, tokens, cfg["index_topk"])

    ckpt = os.path.join(args.out, "checkpoint")
    os.makedirs(ckpt, exist_ok=True)
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({k: (v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)).contiguous()
               for k, v in w.items()}, os.path.join(ckpt, "model.safetensors"))
    save_file({
        "tokens": torch.tensor(tokens, dtype=torch.float32),
        "prefill_len": torch.tensor([P], dtype=torch.float32),
        "dense_logits": dense.contiguous(),
        "dsa_logits": dsa.contiguous(),
        "dense_decode_logits": dense_dec.contiguous(),
        "dsa_decode_logits": dsa_dec.contiguous(),
        "selections": v32.selections_tensor(sel, cfg["index_topk"]),
        "decode_selections": v32.selections_tensor(dec_sel, cfg["index_topk"]),
        "dense_mtp_logits": dense_mtp.contiguous(),
        "dsa_mtp_logits": dsa_mtp.contiguous(),
        "dense_mtp_decode_logits": dense_mtp_dec.contiguous(),
        "dsa_mtp_decode_logits": dsa_mtp_dec.contiguous(),
    }, os.path.join(args.out, "fixtures.safetensors"))

    for name, pre, dec, mtp, mtp_dec in (("dense", dense, dense_dec, dense_mtp, dense_mtp_dec),
                                         ("dsa", dsa, dsa_dec, dsa_mtp, dsa_mtp_dec)):
        for what, a, b in (("logits", pre[P:], dec), ("mtp logits", mtp, mtp_dec)):
            row = (a - b).abs().amax(-1)
            agree = int((a.argmax(-1) == b.argmax(-1)).sum())
            print(f"{name} {what}: std {a.std():.3f}; decode vs prefill: max |diff| {row.max():.4f} (rows over "
                  f"{NOISE_BOUND}: {int((row > NOISE_BOUND).sum())}), argmax agree {agree}/{len(b)}")
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
