"""The decode step's matrix products on weights packed once for oneDNN (CPU), with q/k/v and gate/up fused.

Why: a decode step multiplies a few rows (one token per sequence) by every weight matrix of the model, so
it is bound by how fast the kernels stream the weights. `F.linear` on the CPU hands such a skinny product
to a GEMM that re-packs the weight on every call; on this 2-core machine at 8 rows it read the weights at
10-23 GB/s (the 49152 x 576 LM head at 9.5), oneDNN on a weight reordered once at 24-74 GB/s (LM head 41;
results/bench/profile/packed_linear.txt). A decode packs the weights once (about 2 ms per 1.8M parameters,
more while the pack's pages are first touched); the batches of one evaluation share one pack
(`reusing_pack`), a rollout packs the weights of its own optimizer step.

Fusing q/k/v into one product and gate/up into another gives fewer, larger calls; each output element
is still one row of a weight times the input. The kernels sum in another order than `F.linear`: logits
differ by about 1e-5 relative, and tests/test_decoder_real.py checks greedy answers against `generate`.

Only plain `nn.Linear` projections are packed (a LoRA-wrapped layer is not): `layer_products` falls back
to calling the modules, which is also the path on a GPU.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
_enabled = True  # off only inside `unpacked()`


@contextlib.contextmanager
def unpacked() -> Iterator[None]:
    """Decodes inside run on the model's own modules (`F.linear`): the benchmark's side-by-side figure."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def packing_unavailable(model: Any) -> str | None:
    """Why this model's decode cannot use packed weights (one line), or None when it can."""
    if not _enabled:
        return "packing turned off (harness.decoding.packed.unpacked)"
    weight = model.lm_head.weight
    if weight.device.type != "cpu":
        return f"weights on {weight.device.type} (oneDNN packing is for the CPU)"
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return "this torch build has no oneDNN linear"
    if compute_dtype(model) not in PACKABLE_DTYPES:
        return f"compute dtype {compute_dtype(model)} (packing handles float32 and bfloat16)"
    base = getattr(model, model.base_model_prefix)
    for layer in base.layers:
        linears = _projections(layer)
        if any(type(m) is not torch.nn.Linear for m in linears):  # exact type: wrapped layers add work
            return "a projection is not a plain nn.Linear (e.g. LoRA adapters)"
    return None


def _projections(layer: Any) -> list[Any]:
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]


def compute_dtype(model: Any) -> torch.dtype:
    """The dtype the decode's products run in: autocast's where it is on (float32 master weights computing
    in bf16, harness.models.autocast), else the weights' own."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return model.lm_head.weight.dtype


class Product:
    """x -> x @ W.T + b with W packed for oneDNN in `dtype`, for inputs of about `rows` rows (the input is
    cast to `dtype`, as autocast casts it for `F.linear`)."""

    def __init__(
        self, weights: list[torch.Tensor], biases: list[torch.Tensor | None], rows: int, dtype: torch.dtype
    ):
        weight = torch.cat(weights) if len(weights) > 1 else weights[0]
        self.dtype = dtype
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), rows)
        if all(b is None for b in biases):
            self.bias = None
        else:  # a fused product where only some parts have a bias: zeros for the others
            parts = [
                b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases, strict=True)
            ]
            self.bias = torch.cat(parts).detach().to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.weight, self.bias, "none", [], "")


class LayerProducts:
    """The projections of one decoder layer: `qkv(x) -> (q, k, v)`, `o(x)`, `mlp(x)`."""

    def __init__(self, layer: Any, rows: int | None, dtype: torch.dtype | None = None):
        attn, mlp = layer.self_attn, layer.mlp
        self.act = mlp.act_fn
        self.sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        self.packed = rows is not None
        if not self.packed:  # the modules themselves (LoRA wrappers, GPU)
            self._q, self._k, self._v = attn.q_proj, attn.k_proj, attn.v_proj
            self.o, self._gate, self._up, self.down = attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj
            return
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        dtype = dtype or attn.q_proj.weight.dtype
        self._qkv = Product([m.weight for m in qkv], [m.bias for m in qkv], rows, dtype)
        self.o = Product([attn.o_proj.weight], [attn.o_proj.bias], rows, dtype)
        gate_up = [mlp.gate_proj, mlp.up_proj]
        self._gate_up = Product([m.weight for m in gate_up], [m.bias for m in gate_up], rows, dtype)
        self.down = Product([mlp.down_proj.weight], [mlp.down_proj.bias], rows, dtype)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.packed:
            return self._q(x), self._k(x), self._v(x)
        return tuple(self._qkv(x).split(self.sizes, dim=-1))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return self.down(self.act(self._gate(x)) * self._up(x))
        gate, up = self._gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)


# models inside `reusing_pack`: model -> its pack (dtype, layers, LM head), or None until the first decode
_REUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def reusing_pack(model: Any) -> Iterator[None]:
    """Decodes of `model` inside the block share one pack (evaluation: many batches, fixed weights). The
    caller promises that the weights do not change inside; outside, every decode packs the weights it
    sees (a rollout: the next optimizer step makes any pack stale). An explicit scope rather than a
    staleness check: weights written through `.data` or by a checkpoint load keep their version counter."""
    outer = model in _REUSED
    if not outer:
        _REUSED[model] = None
    try:
        yield
    finally:
        if not outer:
            _REUSED.pop(model, None)


def layer_products(
    model: Any, rows: int
) -> tuple[list[LayerProducts], Callable[[torch.Tensor], torch.Tensor]]:
    """Per-layer projections and the LM head for a decode of `rows` rows: packed when the model allows it
    (shared by the decodes of a `reusing_pack` block), else the model's own modules."""
    base = getattr(model, model.base_model_prefix)
    if packing_unavailable(model) is not None:
        return [LayerProducts(layer, None) for layer in base.layers], model.lm_head
    dtype = compute_dtype(model)
    kept = _REUSED.get(model)
    if kept is not None and kept[0] == dtype:
        return kept[1], kept[2]
    layers = [LayerProducts(layer, rows, dtype) for layer in base.layers]
    head = model.lm_head
    packed_head = Product([head.weight], [head.bias], rows, dtype)
    if model in _REUSED:
        _REUSED[model] = (dtype, layers, packed_head)
    return layers, packed_head
