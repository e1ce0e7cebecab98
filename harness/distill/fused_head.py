"""LM head + per-token loss, fused and chunked over positions, with the backward computed on the way.

Full-vocabulary losses are where memory goes: logits for N positions cost N x V floats, and autograd keeps
the logits, their softmax and the per-token loss graph alive until backward. Here the head is applied to a
chunk of positions at a time; for each chunk the gradient of the chunk's loss w.r.t. its logits is taken at
once (autograd on the chunk alone, so any per-token loss works without hand-derived gradients) and folded
into the gradients of the hidden states and of the head weight. Only those two gradients are kept for the
backward pass: memory is O(chunk x V + N x H + V x H) instead of O(N x V), and nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (logits of a chunk [n, V], start, end) -> per-token loss [n]; `start:end` index the flattened positions
TokenLossFn = Callable[[torch.Tensor, int, int], torch.Tensor]


def head_compute_dtype(
    device: torch.device, weight_dtype: torch.dtype, floor: torch.dtype | None = None
) -> torch.dtype:
    """The dtype the LM head's matmuls run in here: autocast's where it is on (mixed precision), else the
    weight's own; `floor=torch.float32` keeps float32 weights in float32 even under autocast (losses that
    compare two sets of logits). Read where the caller's autocast is still in force (the chunk loop
    switches it off)."""
    if weight_dtype == torch.float32 and torch.is_autocast_enabled(device.type):
        autocast = torch.get_autocast_dtype(device.type)
        if floor is not None and torch.finfo(floor).bits > torch.finfo(autocast).bits:
            return floor
        return autocast
    return weight_dtype


class _FusedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, token_weights, fn, chunk_size, compute):  # type: ignore[override]
        n = hidden.shape[0]
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32  # accumulation precision
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.zeros_like(hidden) if need_h else None
        # accumulate the weight gradient in float32 even for low-precision weights: it sums over all chunks
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        # the head in the compute dtype, cast once for all chunks (mixed precision: float32 master -> bf16);
        # the matmuls below are then explicit about their dtypes, autocast stays out of the loop
        w = weight.to(compute)
        b = bias.to(compute) if bias is not None else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, chunk_size):
                end = min(start + chunk_size, n)
                h = hidden[start:end].to(compute)
                logits = torch.nn.functional.linear(h, w, b)
                with torch.enable_grad():
                    logits.requires_grad_(True)
                    per_token = fn(logits, start, end)
                    chunk_loss = (per_token.to(acc) * token_weights[start:end].to(acc)).sum()
                    if need_h or need_w or need_b:
                        (g_logits,) = torch.autograd.grad(chunk_loss, logits)
                total += chunk_loss.detach()
                if need_h or need_w or need_b:
                    g_logits = g_logits.to(compute)
                    if need_h:
                        grad_h[start:end] = g_logits @ w
                    if need_w:
                        if compute == acc:
                            grad_w.addmm_(g_logits.t(), h)
                        else:  # low-precision matmul (float32 inside the kernel), summed over chunks in acc
                            grad_w += (g_logits.t() @ h).to(acc)
                    if need_b:
                        grad_b += g_logits.to(acc).sum(0)
                del logits  # one chunk of logits alive at a time
        ctx.save_for_backward(
            grad_h if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
        )
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        # in place: the saved gradients are used once (no double backward), and a copy of the head-sized
        # weight gradient would be one more vocabulary x hidden buffer at the peak
        grads = [None if g is None else g.mul_(grad_out.to(g.dtype)) for g in ctx.saved_tensors]
        return grads[0], grads[1], grads[2], None, None, None, None


def fused_head_loss(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    token_weights: torch.Tensor,
    token_loss: TokenLossFn,
    chunk_size: int = 128,
    floor: torch.dtype | None = None,
) -> torch.Tensor:
    """sum_i token_weights[i] * token_loss(head(hidden[i])) as a differentiable scalar (float32, or float64).

    `hidden` [N, H] holds only the positions that need logits (padding already dropped); `token_weights` [N]
    carries masking and normalisation (zero weight = no gradient from that position, but `token_loss` still
    sees it, so diagnostics can cover skipped positions). `floor`: see `head_compute_dtype`.
    """
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [positions, hidden_size], got shape {tuple(hidden.shape)}")
    if chunk_size < 1:
        raise ValueError(f"loss_chunk_size={chunk_size}: must be >= 1")
    weight = head.weight
    bias = getattr(head, "bias", None)
    compute = head_compute_dtype(hidden.device, weight.dtype, floor)
    return _FusedHeadLoss.apply(hidden, weight, bias, token_weights.detach(), token_loss, chunk_size, compute)
