"""DSAttention — the DeepSeek-V3.2 attention layer (MLA in MQA mode + lightning indexer) as an nn.Module.

The layer's arithmetic is the library's model layer (``include/dsa/model.h``, ``docs/model.md``): the
DSA-specific steps (RoPE, Hadamard, indexer logits, top-k, sparse / dense attention, indexer KL) run the
dsa ops; the projections and norms are torch's ``nn.Linear`` / ``nn.RMSNorm`` / ``nn.LayerNorm`` with the
Hugging Face parameter names, so a V3.2 checkpoint's per-layer tensors load with ``load_state_dict``.

Modes (``mode`` argument of :meth:`DSAttention.forward`):
* ``"dense"`` — the warm-up stage: dense causal attention; the indexer's loss is the dense KL between
  the head-summed attention and softmax(I) over every causal key.
* ``"sparse"`` — DSA: the indexer selects ``topk`` keys per query (no gradient through the selection),
  attention runs over them, the indexer's loss is the KL on the selected set.
In both modes the indexer reads detached inputs (V3.2: the main loss never reaches the indexer) and the
KL target is detached (the indexer loss never reaches the main model).
"""
import ctypes
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from . import _library, autograd, ops

Tensor = torch.Tensor
_INDEXER_NORM_EPS = 1e-6   # k_norm LayerNorm eps of the V3.2 indexer


@dataclass
class DSAttentionConfig:
    """The attention keys of a Hugging Face DeepSeek-V3.2 config.json (defaults: the library's tiny
    test model, ``dsa::model::Config``)."""
    hidden_size: int = 128
    num_attention_heads: int = 4
    q_lora_rank: int = 96
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    index_n_heads: int = 4
    index_head_dim: int = 32
    index_topk: int = 64
    rope_theta: float = 10000.0
    rope_factor: float = 1.0            # YaRN factor (≤ 1: none)
    original_max_position: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0
    rms_norm_eps: float = 1e-6


def _rope_tables(c: DSAttentionConfig) -> Tuple[Tensor, float]:
    """inv_freq [rope/2] and the YaRN softmax mscale from the library (cpu::rope_inv_freq, yarn_softmax_mscale)."""
    lib = ctypes.CDLL(_library.library_path())
    inv_freq = torch.empty(c.qk_rope_head_dim // 2, dtype=torch.float32)
    args = (ctypes.c_double(c.rope_factor), ctypes.c_int(c.original_max_position), ctypes.c_double(c.beta_fast),
            ctypes.c_double(c.beta_slow), ctypes.c_double(c.mscale), ctypes.c_double(c.mscale_all_dim))
    lib.dsa_torch_rope_inv_freq(ctypes.c_int(c.qk_rope_head_dim), ctypes.c_double(c.rope_theta), *args,
                                ctypes.c_void_p(inv_freq.data_ptr()))
    lib.dsa_torch_yarn_mscale.restype = ctypes.c_double
    return inv_freq, float(lib.dsa_torch_yarn_mscale(*args))


def _ranges(T: int, seq_lens: Optional[Sequence[int]], device) -> Tuple[Tensor, Tensor, Tensor]:
    """Positions (restarting per packed sequence) and causal key ranges [ks, ke) of T packed rows."""
    lens = list(seq_lens) if seq_lens is not None else [T]
    if sum(lens) != T or any(n <= 0 for n in lens):
        raise ValueError(f"DSAttention: seq_lens {lens} must be positive and sum to T = {T}")
    # Plain Python over the (static) lengths, so torch.compile sees constants, not data-dependent shapes.
    pos, ks, ke, start = [], [], [], 0
    for n in lens:
        pos += range(n)
        ks += [start] * n
        ke += range(start + 1, start + n + 1)
        start += n
    return tuple(torch.tensor(v, dtype=torch.int32, device=device) for v in (pos, ks, ke))


class DSAttention(nn.Module):
    """DeepSeek-V3.2 attention with DSA on packed sequences.

    forward(x [T, hidden_size] float32, seq_lens=None, mode="sparse", topk=None)
        → (y [T, hidden_size] float32, indexer_loss: float32 scalar).
    ``x`` is the layer's normed input (after input_layernorm). Train the main model on a loss of y and
    the indexer on indexer_loss (add them: the two gradient paths are disjoint by construction).
    """

    def __init__(self, config: DSAttentionConfig):
        super().__init__()
        c = self.config = config
        if c.index_head_dim < c.qk_rope_head_dim or c.index_head_dim & (c.index_head_dim - 1):
            raise ValueError(f"DSAttention: index_head_dim = {c.index_head_dim} must be a power of two "
                             f">= qk_rope_head_dim = {c.qk_rope_head_dim}")
        H, dn, dr, dv, kvr = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank
        self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
        self.q_a_layernorm = nn.RMSNorm(c.q_lora_rank, eps=c.rms_norm_eps)
        self.q_b_proj = nn.Linear(c.q_lora_rank, H * (dn + dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, kvr + dr, bias=False)
        self.kv_a_layernorm = nn.RMSNorm(kvr, eps=c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(kvr, H * (dn + dv), bias=False)
        self.o_proj = nn.Linear(H * dv, c.hidden_size, bias=False)
        self.indexer = nn.Module()
        self.indexer.wq_b = nn.Linear(c.q_lora_rank, c.index_n_heads * c.index_head_dim, bias=False)
        self.indexer.wk = nn.Linear(c.hidden_size, c.index_head_dim, bias=False)
        self.indexer.k_norm = nn.LayerNorm(c.index_head_dim, eps=_INDEXER_NORM_EPS)
        self.indexer.weights_proj = nn.Linear(c.hidden_size, c.index_n_heads, bias=False)
        inv_freq, mscale = _rope_tables(c)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # (nope + rope)^-0.5 · mscale² (dsa-spec §2.4): explicit, never Dqk^-0.5 of the 576-dim latent.
        self.softmax_scale = (dn + dr) ** -0.5 * mscale * mscale

    def _mla(self, x: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """q_lat [T, H, kvr + dr], kv [T, kvr + dr] (MQA mode) and the normed q latent qr."""
        c = self.config
        T, H, dn, dr, kvr = x.shape[0], c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank
        qr = self.q_a_layernorm(self.q_a_proj(x))
        q = ops.rope(self.q_b_proj(qr).view(T, H, dn + dr).contiguous(), pos, self.inv_freq, offset=dn, interleaved=True)
        kva = self.kv_a_proj_with_mqa(x)
        k_pe = ops.rope(kva[:, kvr:].reshape(T, 1, dr).contiguous(), pos, self.inv_freq, offset=0, interleaved=True)
        kv = torch.cat([self.kv_a_layernorm(kva[:, :kvr]), k_pe.view(T, dr)], dim=1)
        w_uk = self.kv_b_proj.weight.view(H, dn + c.v_head_dim, kvr)[:, :dn]          # [H, dn, kvr]
        q_lat = torch.cat([torch.einsum("thn,hnc->thc", q[..., :dn], w_uk), q[..., dn:]], dim=2)
        return q_lat.contiguous(), kv.contiguous(), qr

    def _indexer_inputs(self, x: Tensor, qr: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """qi [T, HI, DI], ki [T, DI], w [T, HI] from detached inputs."""
        c, ix = self.config, self.indexer
        T, HI, DI, dr = x.shape[0], c.index_n_heads, c.index_head_dim, c.qk_rope_head_dim
        x, qr = x.detach(), qr.detach()
        qi = ops.rope(ix.wq_b(qr).view(T, HI, DI).contiguous(), pos, self.inv_freq, offset=0, interleaved=False)
        ki = ops.rope(ix.k_norm(ix.wk(x)).view(T, 1, DI).contiguous(), pos, self.inv_freq, offset=0, interleaved=False)
        w = ix.weights_proj(x) * (HI * DI) ** -0.5
        return ops.hadamard_transform(qi), ops.hadamard_transform(ki).view(T, DI), w.contiguous()

    def forward(self, x: Tensor, seq_lens: Optional[Sequence[int]] = None, mode: str = "sparse",
                topk: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        if mode not in ("dense", "sparse"):
            raise ValueError(f"DSAttention: mode = {mode!r} must be 'dense' or 'sparse'")
        if x.dim() != 2 or x.shape[1] != self.config.hidden_size:
            raise ValueError(f"DSAttention: x has shape {tuple(x.shape)}; expected [T, {self.config.hidden_size}]")
        c = self.config
        T, kvr = x.shape[0], c.kv_lora_rank
        pos, ks, ke = _ranges(T, seq_lens, x.device)
        q_lat, kv, qr = self._mla(x, pos)
        qi, ki, w = self._indexer_inputs(x, qr, pos)
        if mode == "dense":
            o_lat, _, lse = ops.dense_attention(q_lat, kv, ks, ke, self.softmax_scale, kvr)
            index_logits = ops.indexer_logits(qi, ki, w, ks, ke)
            loss = autograd.indexer_kl_loss(q_lat, kv, lse, self.softmax_scale, index_logits, ks=ks, ke=ke)
        else:
            k = min(topk or c.index_topk, T)
            with torch.no_grad():   # the selection is discrete: no gradient flows through it
                indices = ops.indexer_topk(qi, ki, w, ks, ke, k)
            o_lat, _, lse = ops.sparse_attention(q_lat, kv, indices, self.softmax_scale, kvr)
            index_logits = autograd.indexer_logits_selected(qi, ki, w, ks, ke, indices)
            loss = autograd.indexer_kl_loss(q_lat, kv, lse, self.softmax_scale, index_logits, indices=indices)
        w_uv = self.kv_b_proj.weight.view(c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, kvr)[:, c.qk_nope_head_dim:]
        out = torch.einsum("thc,hvc->thv", o_lat, w_uv).reshape(T, -1)               # o_lat[h] · W_UV[h]ᵀ
        return self.o_proj(out), loss
