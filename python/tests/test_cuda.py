"""CUDA tensors: the CUDA backend on torch's current stream against the CPU backend, CUDA-graph capture,
torch.compile (inductor) and device mix-ups. Skipped without a GPU or without an extension built with
the CUDA backend."""
import pytest
import torch

import dsa
import reference as ref

HAS_CUDA_KERNELS = torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
    "dsa::sparse_attention_forward", "CUDA")
pytestmark = pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a GPU and the extension's CUDA backend")

# bf16 tensor-core variants round P to bf16 and accumulate in fp32 (docs/kernels/sparse_attention.md):
# relative error ~1e-3..1e-2 against the exact CPU result.
TC_TOL = 2e-2
EXACT_TOL = 1e-4


def attention_case(T=64, S=256, H=64, K=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H, 576, generator=g).bfloat16()
    kv = torch.randn(S, 576, generator=g).bfloat16()
    idx = torch.randint(-1, S, (T, K), generator=g, dtype=torch.int32)
    return q, kv, idx, 0.1352


def test_sparse_attention_cuda_matches_cpu():
    q, kv, idx, scale = attention_case()
    out_c, _, lse_c = dsa.ops.sparse_attention(q, kv, idx, scale, 512)
    out_g, _, lse_g = dsa.ops.sparse_attention(q.cuda(), kv.cuda(), idx.cuda(), scale, 512)
    ref.close(out_g.cpu(), out_c, TC_TOL, TC_TOL, "out")
    ref.close(lse_g.cpu(), lse_c, TC_TOL, TC_TOL, "lse")


def test_indexer_and_topk_cuda_match_cpu():
    g = torch.Generator().manual_seed(1)
    T, S, HI = 32, 512, 64
    q, k, w = torch.randn(T, HI, 128, generator=g), torch.randn(S, 128, generator=g), torch.randn(T, HI, generator=g)
    ks = torch.zeros(T, dtype=torch.int32)
    ke = torch.randint(1, S + 1, (T,), generator=g, dtype=torch.int32)
    logits = dsa.ops.indexer_logits(q, k, w, ks, ke)
    logits_g = dsa.ops.indexer_logits(q.cuda(), k.cuda(), w.cuda(), ks.cuda(), ke.cuda())
    ref.close(logits_g.cpu(), logits, EXACT_TOL, EXACT_TOL, "fp32 logits (exact variant)")
    assert torch.equal(dsa.ops.topk(logits.cuda(), 64, ks=ks.cuda(), ke=ke.cuda()).cpu(), dsa.ops.topk(logits, 64, ks=ks, ke=ke))


def test_decode_cuda_matches_cpu():
    g = torch.Generator().manual_seed(2)
    records = dsa.ops.mla_cache_pack(torch.randn(256, 576, generator=g))
    q = torch.randn(4, 2, 64, 576, generator=g).bfloat16()
    idx = torch.randint(-1, 256, (4, 2, 64), generator=g, dtype=torch.int32)
    out_c, lse_c = dsa.ops.sparse_attention_decode(q, records, idx, 0.1352)
    out_g, lse_g = dsa.ops.sparse_attention_decode(q.cuda(), records.cuda(), idx.cuda(), 0.1352)
    ref.close(out_g.cpu(), out_c, TC_TOL, TC_TOL, "out")
    ref.close(lse_g.cpu(), lse_c, TC_TOL, TC_TOL, "lse")


def test_runs_on_the_current_stream_and_in_a_cuda_graph():
    q, kv, idx, scale = attention_case(seed=3)
    q, kv, idx = q.cuda(), kv.cuda(), idx.cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):                       # warm-up: the backend's workspace reaches its size here
            dsa.ops.sparse_attention(q, kv, idx, scale, 512)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):   # capture on the warmed stream: its backend is sized
        out, _, lse = dsa.ops.sparse_attention(q, kv, idx, scale, 512)
    q2, kv2, idx2, _ = attention_case(seed=4)
    q.copy_(q2)
    kv.copy_(kv2)
    idx.copy_(idx2)
    graph.replay()
    torch.cuda.synchronize()
    eager, _, eager_lse = dsa.ops.sparse_attention(q, kv, idx, scale, 512)
    assert torch.equal(out, eager) and torch.equal(lse, eager_lse)


def test_torch_compile_inductor_on_gpu():
    q, kv, idx, scale = attention_case(seed=5)
    q, kv, idx = q.cuda().requires_grad_(), kv.cuda().requires_grad_(), idx.cuda()

    def f(q, kv):
        return dsa.ops.sparse_attention(q, kv, idx, scale, 512)[0].float().square().mean()

    loss = torch.compile(f, fullgraph=True)(q, kv)
    loss.backward()
    dq = q.grad.clone()
    q.grad = None
    f(q, kv).backward()
    ref.close(dq.float().cpu(), q.grad.float().cpu(), 1e-6, 1e-6, "dq compiled vs eager")


def test_device_mixup_is_refused_by_name():
    q, kv, idx, scale = attention_case(T=4, S=8, H=64, K=4)
    with pytest.raises(ValueError, match="kv is on cpu but the other inputs are on cuda"):
        dsa.ops.sparse_attention(q.cuda(), kv, idx.cuda(), scale, 512)
    with pytest.raises(ValueError, match="indices is on cpu"):
        dsa.ops.sparse_attention(q.cuda(), kv.cuda(), idx, scale, 512)
