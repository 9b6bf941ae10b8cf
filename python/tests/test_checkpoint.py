"""DSAttention inside a whole model against the C++ inference session, through the C API.

A checkpoint written by `dsa init` (ctest fixture) is loaded twice: by the C++ library (dsa_model_load +
dsa_session_append through ctypes on libdsa_c) and into a PyTorch model built here around DSAttention —
embedding, RMSNorm, DSAttention, SwiGLU MLP, final norm, tied head: the reference layers of
include/dsa/model.h written with torch.nn.functional. The last row's logits of a prompt longer than
index_topk must agree in sparse mode (selection active) and in dense mode."""
import ctypes
import json
import os
import struct

import pytest
import torch
import torch.nn.functional as F

import dsa
import reference as ref

CHECKPOINT = os.environ.get("DSA_TEST_CHECKPOINT", "")
C_LIBRARY = os.environ.get("DSA_C_LIBRARY", "")
pytestmark = pytest.mark.skipif(not (os.path.isdir(CHECKPOINT) and os.path.isfile(C_LIBRARY)),
                                reason="needs DSA_TEST_CHECKPOINT (a dsa init folder) and DSA_C_LIBRARY (libdsa_c)")
PROMPT_LEN = 48                   # > index_topk = 32 of scripts/demo_model.json: the selection is active
SAFETENSORS_HEADER_BYTES = 8      # little-endian u64 length of the JSON header
# Both sides compute in fp32 with different matmul kernels (BLIS vs torch) over 2 layers and a 1024-way
# head: logits of O(1) agreed to 4e-6 (sparse and dense); 1e-3 keeps margin without hiding a wrong layer
# (sparse vs dense attention alone moves these logits by 2.7).
TOL = 1e-3
DSA_ATTENTION_SPARSE, DSA_ATTENTION_DENSE = 0, 1


def load_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:SAFETENSORS_HEADER_BYTES])
    header = json.loads(blob[SAFETENSORS_HEADER_BYTES:SAFETENSORS_HEADER_BYTES + n])
    base = SAFETENSORS_HEADER_BYTES + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']} (dsa init writes F32)"
        lo, hi = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(blob[base + lo:base + hi]), dtype=torch.float32).view(info["shape"])
    return out


class Reference(torch.nn.Module):
    """The model of include/dsa/model.h around dsa.DSAttention (dense SwiGLU MLPs, tied or untied head)."""

    def __init__(self, cfg, weights):
        super().__init__()
        rs = cfg.get("rope_scaling") or {}
        self.cfg, self.w = cfg, weights
        acfg = dsa.DSAttentionConfig(
            hidden_size=cfg["hidden_size"], num_attention_heads=cfg["num_attention_heads"],
            q_lora_rank=cfg["q_lora_rank"], kv_lora_rank=cfg["kv_lora_rank"],
            qk_nope_head_dim=cfg["qk_nope_head_dim"], qk_rope_head_dim=cfg["qk_rope_head_dim"],
            v_head_dim=cfg["v_head_dim"], index_n_heads=cfg["index_n_heads"], index_head_dim=cfg["index_head_dim"],
            index_topk=cfg["index_topk"], rope_theta=cfg["rope_theta"], rope_factor=rs.get("factor", 1.0),
            original_max_position=rs.get("original_max_position_embeddings", 4096),
            beta_fast=rs.get("beta_fast", 32.0), beta_slow=rs.get("beta_slow", 1.0), mscale=rs.get("mscale", 1.0),
            mscale_all_dim=rs.get("mscale_all_dim", 0.0), rms_norm_eps=cfg["rms_norm_eps"])
        self.attn = torch.nn.ModuleList()
        for i in range(cfg["num_hidden_layers"]):
            a = dsa.DSAttention(acfg)
            prefix = f"model.layers.{i}.self_attn."
            a.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
            self.attn.append(a)

    def forward(self, tokens, mode):
        w, eps = self.w, self.cfg["rms_norm_eps"]
        norm = lambda x, name: F.rms_norm(x, (x.shape[-1],), w[name], eps)  # noqa: E731
        x = w["model.embed_tokens.weight"][tokens]
        for i, attn in enumerate(self.attn):
            p = f"model.layers.{i}."
            x = x + attn(norm(x, p + "input_layernorm.weight"), mode=mode)[0]
            h = norm(x, p + "post_attention_layernorm.weight")
            x = x + F.linear(F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"]),
                             w[p + "mlp.down_proj.weight"])
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return F.linear(norm(x, "model.norm.weight"), head)


def session_logits(tokens, mode, vocab):
    lib = ctypes.CDLL(C_LIBRARY)
    lib.dsa_last_error.restype = ctypes.c_char_p
    model, session = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.dsa_model_load(CHECKPOINT.encode(), ctypes.byref(model)) == 0, lib.dsa_last_error()

    class Options(ctypes.Structure):
        _fields_ = [(n, ctypes.c_int32) for n in ("mode", "kv_cache", "fp8_indexer", "topk", "max_tokens")]

    opt = Options()
    lib.dsa_session_options_init(ctypes.byref(opt))
    opt.mode = mode
    assert lib.dsa_session_create(model, ctypes.byref(opt), ctypes.byref(session)) == 0, lib.dsa_last_error()
    ids = (ctypes.c_int32 * len(tokens))(*tokens)
    logits = torch.empty(vocab, dtype=torch.float32)
    rc = lib.dsa_session_append(session, ids, ctypes.c_int64(len(tokens)), ctypes.c_void_p(logits.data_ptr()),
                                ctypes.c_int64(vocab))
    assert rc == 0, lib.dsa_last_error()
    lib.dsa_session_free(session)
    lib.dsa_model_free(model)
    return logits


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_dsattention_model_matches_the_cpp_session(mode):
    with open(os.path.join(CHECKPOINT, "config.json")) as f:
        cfg = json.load(f)
    weights = load_safetensors(os.path.join(CHECKPOINT, "model.safetensors"))
    tokens = [(7 * i + 3) % cfg["vocab_size"] for i in range(PROMPT_LEN)]
    with torch.no_grad():
        ours = Reference(cfg, weights)(torch.tensor(tokens), mode)[-1]
    theirs = session_logits(tokens, DSA_ATTENTION_SPARSE if mode == "sparse" else DSA_ATTENTION_DENSE, cfg["vocab_size"])
    ref.close(ours, theirs, TOL, TOL, f"last-row logits ({mode})")
