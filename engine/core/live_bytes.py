"""Peak live tensor bytes of code run on PyTorch's meta device: each storage counted from its creation to its death.

Meta tensors carry shapes and dtypes but no data, so a forward pass at any size costs no memory and
little time. A TorchDispatchMode sees every tensor an operator returns; a storage is counted once
(views and in-place results share their input's) and uncounted when Python frees it (a weak
reference), so `peak` is the most bytes alive at any moment, not their sum. Named phases (set from
forward hooks) keep their own peaks. Tensors that existed before (weights) are not counted.

One substitution: on the meta device F.scaled_dot_product_attention falls back to the math kernel,
which materialises the L x L attention matrix; the kernels a run uses (flash attention on the CPU,
flash / memory-efficient on CUDA) never do. Inside this mode it runs as the CPU flash kernel's meta
function instead (the output and a per-row log-sum-exp).
"""

from __future__ import annotations

import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _FlashAttention(TorchFunctionMode):
    """F.scaled_dot_product_attention as a flash kernel (no L x L matrix) on meta tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and args and args[0].is_meta:
            query, key, value = args[:3]
            extra = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), args[3:]), **kwargs)
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, extra.get("dropout_p", 0.0), extra.get("is_causal", False),
                attn_mask=extra.get("attn_mask"), scale=extra.get("scale"))[0]
        return func(*args, **kwargs)


class LiveBytes(TorchDispatchMode):
    """Live bytes of meta-device storages made inside the mode: `live` now, `peak` overall and per
    phase (`phase_peaks`; `enter_phase(name)` starts one, counting what is alive at its start)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.phase: str | None = None
        self.phase_peaks: dict[str, int] = {}
        self._storages: dict[int, tuple[weakref.ref, int]] = {}
        self._attention = _FlashAttention()

    def __enter__(self):
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._attention.__exit__(*exc)

    def enter_phase(self, name: str) -> None:
        self.phase = name
        self.phase_peaks[name] = max(self.phase_peaks.get(name, 0), self.live)

    def _forget(self, key: int) -> None:
        _, size = self._storages.pop(key, (None, 0))
        self.live -= size

    def _track(self, tensor: torch.Tensor) -> None:
        if not tensor.is_meta:
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._storages:
            return
        size = storage.nbytes()
        self._storages[key] = (weakref.ref(storage, lambda _, key=key: self._forget(key)), size)
        self.live += size
        self.peak = max(self.peak, self.live)
        if self.phase is not None:
            self.phase_peaks[self.phase] = max(self.phase_peaks[self.phase], self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out
