"""dsa — DeepSeek Sparse Attention kernels for PyTorch.

The C++/CUDA library's ops registered as ``torch.ops.dsa.*`` (CPU tensors run the CPU backend, CUDA
tensors the CUDA backend on the current stream), with fake implementations for ``torch.compile``:

* :mod:`dsa.ops` — the ops with the library's own conventions (``include/dsa/ops.h``);
* :mod:`dsa.compat` — FlashMLA / DeepGEMM call contracts (``flash_mla_sparse_fwd``,
  ``flash_mla_with_kvcache``, ``fp8_mqa_logits``, ``fp8_paged_mqa_logits`` and their metadata calls);
* :mod:`dsa.autograd` — differentiable sparse / dense attention, indexer logits and the indexer KL loss;
* :mod:`dsa.module` — :class:`DSAttention`, the DeepSeek-V3.2 attention layer (MLA + lightning indexer).

docs/python.md documents the package.
"""
from ._library import library_path, version as _version

__version__ = _version()

from . import ops  # noqa: E402  (registers the fake kernels and the autograd formulas on import)
from . import autograd, compat  # noqa: E402
from .module import DSAttention, DSAttentionConfig  # noqa: E402

__all__ = ["ops", "compat", "autograd", "DSAttention", "DSAttentionConfig", "library_path", "__version__"]
