#!/usr/bin/env python3
"""An independent PyTorch model of DeepSeek-V3.2's reference inference numerics, and the fixtures
that tests/model_parity.cpp compares the C++ session against.

What it models (DeepSeek-V3.2-Exp inference/model.py + kernel.py, indexer RoPE rotate-half):
  * weights are bf16 (the lm_head and the indexer's weights_proj run in fp32 on the bf16 values);
  * every op computes in fp32 and rounds its output to bf16 where the reference holds a bf16 tensor:
    linear outputs, RMSNorm / LayerNorm outputs, RoPE outputs, Hadamard outputs, the residual stream
    after each add (the norm after an add reads the fp32 sum), the SwiGLU product, the attention
    probabilities before the value product, the attention output;
  * the indexer: q = wq_b(qr) [T, HI, DI], k = LayerNorm(wk(x)); rotate-half RoPE on the first
    qk_rope_head_dim dims; Hadamard (DI^-0.5); FP8 e4m3 quantisation per 128-block with ue8m0
    (power-of-two) scales; head weights w = weights_proj(x) * HI^-0.5 * q_scale * DI^-0.5 (fp32);
    score[t, s] = k_scale[s] * sum_h w[t, h] * relu(q_fp8[t, h] . k_fp8[s]);
  * selection: top min(index_topk, keys) of the causal scores (ties: the smaller position first);
  * prefill (start 0, several tokens) runs MHA mode: k = [c W_UK^T | k_pe], v = c W_UV^T, fp32 logits,
    softmax, bf16 probabilities times bf16 v; decode (one token) runs the absorbed MQA mode over the
    bf16 latent cache: q_lat = bf16(q_nope W_UK), fp32 logits, bf16 probabilities, o_lat, o_lat W_UV;
  * the MLA latent (kv_lora_rank part) goes through FP8 e4m3 with ue8m0 block scales and back (the
    reference's simulation of the deployed FP8 latent cache) before the cache and the prefill use it;
  * main RoPE interleaved on the last qk_rope_head_dim dims; logits fp32.

Output directory (default tests/data/v32_parity):
  checkpoint/config.json, checkpoint/model.safetensors
                                   the tiny checkpoint (official V3.2 key names, BF16 weights)
  fixtures.safetensors             F32 tensors: tokens [T], prefill_len [1],
                                   dense_logits / dsa_logits [T, V] (prefill, every row),
                                   dense_decode_logits / dsa_decode_logits [T - P, V] (prefill of P
                                   tokens, then one decode step per token), selections [L, T, K]
                                   (each row's selected positions of the DSA prefill, ascending, -1 pad),
                                   decode_selections [L, T - P, K] (the same for the decode steps)

Run: /path/to/venv/bin/python tests/parity/v32_reference.py [--out DIR]
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SEED = 20251208
CONFIG = {
    "architectures": ["DeepseekV32ForCausalLM"],
    "model_type": "deepseek_v32",
    "vocab_size": 256,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 3,   # every layer a dense MLP
    "num_attention_heads": 4,
    "q_lora_rank": 64,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 64,
    "v_head_dim": 32,
    "index_n_heads": 4,
    "index_head_dim": 128,
    "index_topk": 32,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128], "scale_fmt": "ue8m0"},
}
SEQ_LEN = 128          # tokens of the fixed sequence (two cache pages of 64)
PREFILL_LEN = 64       # decode fixtures: prefill this many, then decode the rest one by one
QUANT_BLOCK = 128      # act_quant block
FP8_MAX = 448.0        # e4m3 largest finite value
AMAX_FLOOR = 1e-4      # act_quant's floor on a block's absolute maximum
LAYERNORM_EPS = 1e-6   # the indexer's k_norm
HEAD_STD_GAIN = 1.0    # lm_head std = gain / sqrt(hidden): logits of std ~1 after the final RMSNorm


def bf(x):
    """Round fp32 to bf16 (round to nearest even) and back to fp32."""
    return x.to(torch.bfloat16).to(torch.float32)


def make_weights(cfg, seed):
    """Random weights (bf16 values held in fp32), HF names."""
    g = torch.Generator().manual_seed(seed)
    D, H, V = cfg["hidden_size"], cfg["num_attention_heads"], cfg["vocab_size"]
    qr, kvr = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    HI, DI, Fi = cfg["index_n_heads"], cfg["index_head_dim"], cfg["intermediate_size"]
    L = cfg["num_hidden_layers"]

    def mat(rows, cols, gain=1.0):   # std gain / sqrt(fan_in): unit-scale outputs for unit inputs
        return torch.randn(rows, cols, generator=g) * (gain / math.sqrt(cols))

    def norm(n):                      # weights near 1, so a missed or misplaced norm shows
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    w = {"model.embed_tokens.weight": torch.randn(V, D, generator=g)}
    for i in range(L):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        w[p + "input_layernorm.weight"] = norm(D)
        w[a + "q_a_proj.weight"] = mat(qr, D)
        w[a + "q_a_layernorm.weight"] = norm(qr)
        w[a + "q_b_proj.weight"] = mat(H * (dn + dr), qr)
        w[a + "kv_a_proj_with_mqa.weight"] = mat(kvr + dr, D)
        w[a + "kv_a_layernorm.weight"] = norm(kvr)
        w[a + "kv_b_proj.weight"] = mat(H * (dn + dv), kvr)
        w[a + "o_proj.weight"] = mat(D, H * dv, 0.5)
        w[a + "indexer.wq_b.weight"] = mat(HI * DI, qr)
        w[a + "indexer.wk.weight"] = mat(DI, D)
        w[a + "indexer.k_norm.weight"] = norm(DI)
        w[a + "indexer.k_norm.bias"] = 0.1 * torch.randn(DI, generator=g)
        w[a + "indexer.weights_proj.weight"] = mat(HI, D)
        w[p + "post_attention_layernorm.weight"] = norm(D)
        w[p + "mlp.gate_proj.weight"] = mat(Fi, D)
        w[p + "mlp.up_proj.weight"] = mat(Fi, D)
        w[p + "mlp.down_proj.weight"] = mat(D, Fi, 0.5)
    w["model.norm.weight"] = norm(D)
    w["lm_head.weight"] = mat(V, D, HEAD_STD_GAIN)
    return {k: bf(v.float()) for k, v in w.items()}   # the checkpoint is bf16


# ── ops (fp32 inside, bf16 where the reference keeps a bf16 tensor) ──────────────────────────────
def linear(x, W):
    return bf(x @ W.T)


def rmsnorm(x, w, eps):
    return bf(w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)))


def layernorm(x, w, b):
    return bf(F.layer_norm(x, (x.shape[-1],), w, b, LAYERNORM_EPS))


def rope(x, pos, inv_freq, interleaved):
    """x [T, ..., dr]; pairs (2i, 2i+1) when interleaved, else (i, i + dr/2); fp32, then bf16."""
    ang = pos.float()[:, None] * inv_freq[None, :]                  # [T, dr/2]
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [ang.shape[1]]
    c, s = torch.cos(ang).view(shape), torch.sin(ang).view(shape)
    if interleaved:
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return bf(torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2))
    h = x.shape[-1] // 2
    x0, x1 = x[..., :h], x[..., h:]
    return bf(torch.cat([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1))


def hadamard_matrix(n):
    m = torch.ones(1, 1)
    while m.shape[0] < n:
        m = torch.cat([torch.cat([m, m], 1), torch.cat([m, -m], 1)], 0)
    return m * n ** -0.5


def act_quant_ue8m0(x):
    """Per 128-element block: scale 2^ceil(log2(amax / 448)), e4m3 values of x / scale (as fp32)."""
    xb = x.view(*x.shape[:-1], -1, QUANT_BLOCK)
    amax = xb.abs().amax(-1, keepdim=True).clamp(min=AMAX_FLOOR)
    raw = amax * (1.0 / FP8_MAX)
    mant, exp = torch.frexp(raw)                                    # raw = mant * 2^exp, mant in [0.5, 1)
    scale = torch.ldexp(torch.ones_like(raw), exp - (mant == 0.5).to(exp.dtype))
    q = (xb / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(torch.float32)
    return q.view(x.shape), scale.view(*x.shape[:-1], -1)


class Cache:
    def __init__(self, cfg, L):
        n = cfg["max_position_embeddings"]
        self.kv = [torch.zeros(n, cfg["kv_lora_rank"]) for _ in range(L)]
        self.pe = [torch.zeros(n, cfg["qk_rope_head_dim"]) for _ in range(L)]
        self.k8 = [torch.zeros(n, cfg["index_head_dim"]) for _ in range(L)]
        self.ks = [torch.zeros(n, 1) for _ in range(L)]


class Reference:
    def __init__(self, cfg, w, topk):
        self.c, self.w, self.topk = cfg, w, topk
        dr = cfg["qk_rope_head_dim"]
        self.inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dr, 2, dtype=torch.float32) / dr))
        self.scale = (cfg["qk_nope_head_dim"] + dr) ** -0.5
        self.had = hadamard_matrix(cfg["index_head_dim"])
        self.selections = []   # per layer: the last call's allowed-key masks [T, end]

    def indexer(self, l, xn, qan, pos, start, cache):
        c, w = self.c, self.w
        p = f"model.layers.{l}.self_attn.indexer."
        T, HI, DI, dr = xn.shape[0], c["index_n_heads"], c["index_head_dim"], c["qk_rope_head_dim"]
        end = start + T
        q = linear(qan, w[p + "wq_b.weight"]).view(T, HI, DI)
        q = torch.cat([rope(q[..., :dr], pos, self.inv_freq, False), q[..., dr:]], -1)
        k = layernorm(linear(xn, w[p + "wk.weight"]), w[p + "k_norm.weight"], w[p + "k_norm.bias"])
        k = torch.cat([rope(k[:, :dr], pos, self.inv_freq, False), k[:, dr:]], -1)
        q, k = bf(q @ self.had), bf(k @ self.had)
        q8, qs = act_quant_ue8m0(q)                                  # [T, HI, DI], [T, HI, 1]
        k8, ks = act_quant_ue8m0(k)                                  # [T, DI], [T, 1]
        cache.k8[l][start:end], cache.ks[l][start:end] = k8, ks
        hw = (xn @ w[p + "weights_proj.weight"].T) * HI ** -0.5      # fp32 weights_proj
        hw = hw[..., None] * qs * DI ** -0.5                         # [T, HI, 1]
        dots = torch.einsum("thd,sd->ths", q8, cache.k8[l][:end])
        score = (dots.clamp(min=0) * hw).sum(1) * cache.ks[l][:end, 0][None, :]   # [T, end]
        causal = pos[:, None] >= torch.arange(end)[None, :]
        score = score.masked_fill(~causal, float("-inf"))
        k_sel = min(self.topk, end)
        order = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :k_sel]   # ties: smaller first
        allowed = torch.zeros(T, end, dtype=torch.bool).scatter_(1, order, True) & causal
        return allowed

    def mla(self, l, xn, pos, start, cache):
        c, w = self.c, self.w
        a = f"model.layers.{l}.self_attn."
        T, H = xn.shape[0], c["num_attention_heads"]
        dn, dr, dv, kvr = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
        end = start + T
        eps = c["rms_norm_eps"]
        qan = rmsnorm(linear(xn, w[a + "q_a_proj.weight"]), w[a + "q_a_layernorm.weight"], eps)
        q = linear(qan, w[a + "q_b_proj.weight"]).view(T, H, dn + dr)
        q_nope, q_pe = q[..., :dn], rope(q[..., dn:], pos, self.inv_freq, True)
        kva = linear(xn, w[a + "kv_a_proj_with_mqa.weight"])
        cn = rmsnorm(kva[:, :kvr], w[a + "kv_a_layernorm.weight"], eps)
        # the deployed FP8 latent cache, simulated: e4m3 per 128-block with ue8m0 scales, back to bf16
        # (exact: an e4m3 value times a power of two fits bf16); prefill and decode both use it
        c8, cs = act_quant_ue8m0(cn)
        cn = bf((c8.view(T, -1, QUANT_BLOCK) * cs[..., None]).view(T, kvr))
        k_pe = rope(kva[:, kvr:], pos, self.inv_freq, True)
        cache.kv[l][start:end], cache.pe[l][start:end] = cn, k_pe
        allowed = self.indexer(l, xn, qan, pos, start, cache)
        self.selections.append(allowed)
        Wkvb = w[a + "kv_b_proj.weight"].view(H, dn + dv, kvr)
        if T > 1:   # MHA prefill (start 0)
            kv = linear(cn, w[a + "kv_b_proj.weight"]).view(T, H, dn + dv)
            k = torch.cat([kv[..., :dn], k_pe[:, None, :].expand(T, H, dr)], -1)
            v = kv[..., dn:]
            s = torch.einsum("shd,thd->sht", torch.cat([q_nope, q_pe], -1), k) * self.scale
            s = s.masked_fill(~allowed[:, None, :], float("-inf"))
            prob = bf(torch.softmax(s, dim=-1))
            o = bf(torch.einsum("sht,thd->shd", prob, v))
        else:       # absorbed decode over the latent cache
            q_lat = bf(torch.einsum("shd,hdc->shc", q_nope, Wkvb[:, :dn]))
            s = (torch.einsum("shc,tc->sht", q_lat, cache.kv[l][:end]) +
                 torch.einsum("shr,tr->sht", q_pe, cache.pe[l][:end])) * self.scale
            s = s.masked_fill(~allowed[:, None, :], float("-inf"))
            prob = bf(torch.softmax(s, dim=-1))
            o_lat = bf(torch.einsum("sht,tc->shc", prob, cache.kv[l][:end]))
            o = bf(torch.einsum("shc,hdc->shd", o_lat, Wkvb[:, dn:]))
        return linear(o.reshape(T, H * dv), w[a + "o_proj.weight"])

    def mlp(self, l, xn):
        """The dense SwiGLU MLP of layer l (the reference's MLP: bf16 linear outputs and product)."""
        p = f"model.layers.{l}.mlp."
        g, u = linear(xn, self.w[p + "gate_proj.weight"]), linear(xn, self.w[p + "up_proj.weight"])
        return linear(bf(F.silu(g) * u), self.w[p + "down_proj.weight"])

    def layer(self, l, h, residual, pos, start, cache):
        """Decoder layer l: (its output, the residual stream), both bf16; residual None for the first."""
        p, eps = f"model.layers.{l}.", self.c["rms_norm_eps"]
        s = h if residual is None else h + residual                  # fp32 sum of two bf16 tensors
        xn, residual = rmsnorm(s, self.w[p + "input_layernorm.weight"], eps), bf(s)
        s = self.mla(l, xn, pos, start, cache) + residual
        xn, residual = rmsnorm(s, self.w[p + "post_attention_layernorm.weight"], eps), bf(s)
        return self.mlp(l, xn), residual

    def forward(self, tokens, start, cache):
        """Logits [T, V] (fp32) of tokens appended at positions start…; fills the cache. Keeps the
        final hidden state (after model.norm, bf16) in self.hidden."""
        c, w = self.c, self.w
        self.selections = []
        pos = torch.arange(start, start + len(tokens))
        h = w["model.embed_tokens.weight"][torch.tensor(tokens)]
        residual = None
        for l in range(c["num_hidden_layers"]):
            h, residual = self.layer(l, h, residual, pos, start, cache)
        self.hidden = rmsnorm(h + residual, w["model.norm.weight"], c["rms_norm_eps"])
        return self.hidden @ w["lm_head.weight"].T                   # fp32 head


def run(cfg, w, tokens, topk):
    """Prefill logits and per-layer selections; decode logits and per-layer selections of the decode
    steps after a prefill of PREFILL_LEN tokens (selections padded to the sequence length)."""
    ref = Reference(cfg, w, topk)
    prefill = ref.forward(tokens, 0, Cache(cfg, cfg["num_hidden_layers"]))
    sel = [m.clone() for m in ref.selections]
    cache = Cache(cfg, cfg["num_hidden_layers"])
    ref.forward(tokens[:PREFILL_LEN], 0, cache)
    decode, dec_sel = [], [[] for _ in range(cfg["num_hidden_layers"])]
    for t in range(PREFILL_LEN, len(tokens)):
        decode.append(ref.forward([tokens[t]], t, cache)[0])
        for l, m in enumerate(ref.selections):
            dec_sel[l].append(F.pad(m[0], (0, len(tokens) - m.shape[1])))
    return prefill, sel, torch.stack(decode), [torch.stack(rows) for rows in dec_sel]


def selections_tensor(sel, K):
    """[L, T, K]: each row's allowed positions ascending, -1 padded."""
    L, T = len(sel), sel[0].shape[0]
    out = torch.full((L, T, K), -1.0)
    for l, m in enumerate(sel):
        for t in range(T):
            idx = torch.nonzero(m[t]).flatten()
            out[l, t, :len(idx)] = idx.float()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "v32_parity"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    cfg = CONFIG
    w = make_weights(cfg, SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    tokens = torch.randint(0, cfg["vocab_size"], (SEQ_LEN,), generator=g).tolist()

    dense, _, dense_dec, _ = run(cfg, w, tokens, SEQ_LEN)         # top-k >= every context: dense
    dsa, sel, dsa_dec, dec_sel = run(cfg, w, tokens, cfg["index_topk"])

    ckpt = os.path.join(args.out, "checkpoint")
    os.makedirs(ckpt, exist_ok=True)
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in w.items()},
              os.path.join(ckpt, "model.safetensors"))
    save_file({
        "tokens": torch.tensor(tokens, dtype=torch.float32),
        "prefill_len": torch.tensor([PREFILL_LEN], dtype=torch.float32),
        "dense_logits": dense.contiguous(),
        "dsa_logits": dsa.contiguous(),
        "dense_decode_logits": dense_dec.contiguous(),
        "dsa_decode_logits": dsa_dec.contiguous(),
        "selections": selections_tensor(sel, cfg["index_topk"]),
        "decode_selections": selections_tensor(dec_sel, cfg["index_topk"]),
    }, os.path.join(args.out, "fixtures.safetensors"))

    for name, pre, dec in (("dense", dense, dense_dec), ("dsa", dsa, dsa_dec)):
        rows = pre[PREFILL_LEN:]
        agree = int((rows.argmax(-1) == dec.argmax(-1)).sum())
        print(f"{name}: logit std {pre.std():.3f}; decode vs prefill: max |diff| "
              f"{(rows - dec).abs().max():.4f}, argmax agree {agree}/{len(dec)}")
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
