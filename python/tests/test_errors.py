"""Bad input from Python: a ValueError naming the op and the argument, before anything runs; the
inputs are left as they were (outputs are fresh tensors, so nothing else can be written)."""
import re

import pytest
import torch

import dsa
from dsa import compat


def attention_args():
    q = torch.randn(4, 2, 8)
    kv = torch.randn(6, 8)
    idx = torch.tensor([[0, 1], [2, -1], [5, 4], [-1, -1]], dtype=torch.int32)
    return q, kv, idx


def refused(fn, *patterns):
    with pytest.raises(ValueError) as e:
        fn()
    for p in patterns:
        assert re.search(p, str(e.value)), (p, str(e.value))


def test_attention_arguments_named():
    q, kv, idx = attention_args()
    saved = [t.clone() for t in (q, kv, idx)]
    refused(lambda: dsa.ops.sparse_attention(q, kv, idx.long(), 0.3, 4),
            "sparse_attention_forward", "indices has dtype torch.int64; expected torch.int32")
    refused(lambda: dsa.ops.sparse_attention(q.double(), kv.double(), idx, 0.3, 4), "q has dtype torch.float64")
    refused(lambda: dsa.ops.sparse_attention(q, kv.bfloat16(), idx, 0.3, 4), "kv has dtype torch.bfloat16; expected torch.float32")
    refused(lambda: dsa.ops.sparse_attention(q.transpose(0, 1).contiguous().transpose(0, 1), kv, idx, 0.3, 4),
            "q must be contiguous")
    refused(lambda: dsa.ops.sparse_attention(q, kv.t().contiguous().t(), idx, 0.3, 4), "kv must be contiguous")
    refused(lambda: dsa.ops.sparse_attention(q, kv[:, :7].contiguous(), idx, 0.3, 4), r"kv has shape \[6, 7\]; expected \[\*, 8\]")
    refused(lambda: dsa.ops.sparse_attention(q, kv, idx[:3], 0.3, 4), r"indices has shape \[3, 2\]; expected \[4, \*\]")
    bad = idx.clone()
    bad[2, 1] = 6
    refused(lambda: dsa.ops.sparse_attention(q, kv, bad, 0.3, 4), r"indices\[2,1\] = 6 is out of range")
    refused(lambda: dsa.ops.sparse_attention(q, kv, idx, -1.0, 4), "scale")
    refused(lambda: dsa.ops.sparse_attention(q, kv, idx, 0.3, 4, torch.ones(3, dtype=torch.int32)), "topk_length has shape")
    refused(lambda: dsa.ops.dense_attention(q, kv, torch.zeros(4, dtype=torch.int32), torch.full((4,), 7, dtype=torch.int32), 0.3, 4),
            "dense_attention_forward")
    for t, s in zip((q, kv, idx), saved):
        assert torch.equal(t, s)


def test_indexer_and_topk_arguments_named():
    q, k, w = torch.randn(3, 2, 16), torch.randn(5, 16), torch.randn(3, 2)
    ks = torch.zeros(3, dtype=torch.int32)
    ke = torch.full((3,), 5, dtype=torch.int32)
    refused(lambda: dsa.ops.indexer_logits(q, k, w, ks, ke, k_scale=torch.ones(5)), "k_scale is only taken with float8_e4m3fn")
    q8, k8 = q.to(torch.float8_e4m3fn), k.to(torch.float8_e4m3fn)
    refused(lambda: dsa.ops.indexer_logits(q8, k8, w, ks, ke), r"k_scale \[S\] is required")
    refused(lambda: dsa.ops.indexer_logits(q, k, w.t().contiguous(), ks, ke), r"w has shape \[2, 3\]; expected \[3, 2\]")
    refused(lambda: dsa.ops.indexer_logits(q, k, w, ks, ke + 1), "indexer_logits", "ke")
    logits = dsa.ops.indexer_logits(q, k, w, ks, ke)
    refused(lambda: dsa.ops.topk(logits, 0), r"k = 0 must be in \[1, 8192\]")
    refused(lambda: dsa.ops.topk(logits, 9000), "k = 9000")
    refused(lambda: dsa.ops.topk(logits.double(), 2), "logits has dtype torch.float64")
    refused(lambda: dsa.ops.topk(logits, 2, lengths=ke, ks=ks), "either lengths or ks/ke")
    refused(lambda: torch.ops.dsa.indexer_backward(q.bfloat16(), k.bfloat16(), w, ks, ke, None, logits),
            "q has dtype torch.bfloat16; expected torch.float32")
    refused(lambda: dsa.ops.indexer_kl(torch.randn(3, 2, 8), torch.randn(5, 8), torch.randn(3, 2), 0.3, logits),
            "either ks and ke")


def test_decode_and_cache_arguments_named():
    q = torch.randn(1, 1, 2, 576)
    rec = torch.zeros(64, 600, dtype=torch.uint8)
    idx = torch.zeros(1, 1, 4, dtype=torch.int32)
    refused(lambda: dsa.ops.sparse_attention_decode(q, rec, idx, 0.1), "last dimension is 600, expected 656")
    refused(lambda: dsa.ops.sparse_attention_decode(q[..., :512].contiguous(), rec, idx, 0.1), r"q has shape .*576")
    refused(lambda: dsa.ops.mla_cache_pack(torch.randn(3, 512)), r"kv has shape \[3, 512\]")
    refused(lambda: dsa.ops.fp8_block_quantize(torch.randn(2, 100)), "multiple of 128")
    refused(lambda: dsa.ops.hadamard_transform(torch.randn(2, 12)), "hadamard")
    refused(lambda: dsa.ops.indexer_logits_paged(torch.zeros(1, 1, 2, 128, dtype=torch.float8_e4m3fn),
                                                 torch.zeros(100, dtype=torch.uint8), torch.zeros(1, 2),
                                                 torch.ones(1, 1, dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32), 64),
            "not a whole number of 64-slot pages")


def test_compat_arguments_named():
    q = torch.randn(4, 2, 16).bfloat16()
    kv = torch.randn(6, 2, 16).bfloat16()
    idx = torch.zeros(4, 1, 3, dtype=torch.int32)
    refused(lambda: compat.flash_mla_sparse_fwd(q, kv, idx, 0.1, 8), r"flash_mla_sparse_fwd: kv has shape \(6, 2, 16\)")
    refused(lambda: compat.flash_mla_with_kvcache(torch.randn(1, 1, 2, 576), torch.zeros(1, 64, 1, 656, dtype=torch.uint8),
                                                  None, None, 512, None, None, is_fp8_kvcache=True),
            "indices is None")
    refused(lambda: compat.flash_mla_with_kvcache(torch.randn(1, 1, 2, 576), torch.zeros(1, 64, 1, 656, dtype=torch.uint8),
                                                  None, None, 512, None, None, indices=torch.zeros(1, 1, 4, dtype=torch.int32)),
            "is_fp8_kvcache = False")
    refused(lambda: compat.get_paged_mqa_logits_metadata(torch.ones(2, dtype=torch.int32), 32, 132), "block_kv = 32")
    refused(lambda: compat.fp8_mqa_logits(q, kv, torch.randn(4, 2), idx, idx), "kv must be the pair")


def test_c_library_error_does_not_crash_and_keeps_running():
    q, kv, idx = attention_args()
    bad = idx.clone()
    bad[0, 0] = -7
    for _ in range(3):   # the process stays healthy after refusals
        refused(lambda: dsa.ops.sparse_attention(q, kv, bad, 0.3, 4), "out of range")
    out, _, _ = dsa.ops.sparse_attention(q, kv, idx, 0.3, 4)
    assert torch.isfinite(out).all()
