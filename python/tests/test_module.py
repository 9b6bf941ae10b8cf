"""DSAttention (V3.2 MLA + lightning indexer) on CPU tensors: the DSA identities and the training
recipe's gradient rules (detached indexer input, detached KL target, dense warm-up / sparse switch)."""
import pytest
import torch

import dsa
import reference as ref

T = 12


def make(seed=0):
    torch.manual_seed(seed)
    m = dsa.DSAttention(dsa.DSAttentionConfig(index_topk=4))
    x = torch.randn(T, m.config.hidden_size)
    return m, x


def indexer_params(m):
    return {n: p for n, p in m.named_parameters() if n.startswith("indexer.")}


def main_params(m):
    return {n: p for n, p in m.named_parameters() if not n.startswith("indexer.")}


def test_sparse_with_topk_at_least_t_equals_dense():
    m, x = make()
    with torch.no_grad():
        y_dense, _ = m(x, mode="dense")
        y_sparse, _ = m(x, mode="sparse", topk=T)
    # Same keys, summed in another order: fp32 rounding only.
    ref.close(y_sparse, y_dense, 1e-5, 1e-4, "sparse(k >= T) vs dense")


def test_sparse_differs_from_dense_when_k_is_small():
    m, x = make()
    with torch.no_grad():
        y_dense, _ = m(x, mode="dense")
        y_sparse, _ = m(x, mode="sparse", topk=2)
    assert (y_sparse - y_dense).abs().max() > 1e-3
    # rows with at most 2 causal keys see all of them either way
    ref.close(y_sparse[:2], y_dense[:2], 1e-5, 1e-4, "first rows")


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_main_loss_never_reaches_the_indexer(mode):
    m, x = make()
    y, _ = m(x, mode=mode)
    y.pow(2).sum().backward()
    for name, p in indexer_params(m).items():
        assert p.grad is None or not p.grad.any(), name
    assert any(p.grad is not None and p.grad.any() for p in main_params(m).values())


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_indexer_loss_trains_only_the_indexer(mode):
    m, x = make()
    x.requires_grad_()
    _, loss = m(x, mode=mode)
    assert loss.ndim == 0 and loss.item() >= 0
    loss.backward()
    for name, p in main_params(m).items():
        assert p.grad is None or not p.grad.any(), name
    assert x.grad is None or not x.grad.any()          # the indexer input is detached
    grads = indexer_params(m)
    assert grads["indexer.wq_b.weight"].grad.abs().sum() > 0
    assert grads["indexer.weights_proj.weight"].grad.abs().sum() > 0


def test_warmup_step_leaves_the_main_model_unchanged():
    m, x = make()
    for p in main_params(m).values():
        p.requires_grad_(False)                          # warm-up: the model is frozen
    before = {n: p.clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    _, loss = m(x, mode="dense")
    loss.backward()
    opt.step()
    for n, p in m.named_parameters():
        if n.startswith("indexer."):
            continue
        assert torch.equal(p, before[n]), n
    assert not torch.equal(m.indexer.wq_b.weight, before["indexer.wq_b.weight"])


def test_packed_sequences_do_not_attend_across():
    m, x = make()
    with torch.no_grad():
        y_packed, _ = m(x, seq_lens=[5, 7], mode="sparse", topk=3)
        y_second, _ = m(x[5:], mode="sparse", topk=3)
    ref.close(y_packed[5:], y_second, 1e-6, 1e-5, "second sequence alone")


def test_compile_fullgraph_matches_eager():
    m, x = make()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    y_c, l_c = compiled(x, mode="sparse")
    y_e, l_e = m(x, mode="sparse")
    ref.close(y_c.detach(), y_e.detach(), 1e-6, 1e-6, "y")
    ref.close(l_c.detach(), l_e.detach(), 1e-6, 1e-6, "loss")


def test_bad_arguments():
    m, x = make()
    with pytest.raises(ValueError, match="mode"):
        m(x, mode="window")
    with pytest.raises(ValueError, match="x has shape"):
        m(x[:, :5])
    with pytest.raises(ValueError, match="seq_lens"):
        m(x, seq_lens=[5, 5])
    with pytest.raises(ValueError, match="index_head_dim"):
        dsa.DSAttention(dsa.DSAttentionConfig(index_head_dim=24))
