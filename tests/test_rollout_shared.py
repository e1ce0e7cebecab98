"""Shared-prompt rollouts: a prompt repeated for several rollouts is prefilled once, with the same result.

The comparison is with the plain path (`share_prefill=False`: every row prefilled on its own) under the same
seed, *sampling* at temperature 1: the shared cache must give the same distributions to the last bit that
matters for the draw, so the tokens are identical, not merely alike.
"""

from __future__ import annotations

import copy

import torch

from harness.distill.rollout import eos_ids, sample, shared_prefill


def _prompts(tok, n_distinct: int = 3, lengths=(2, 5, 9)) -> list[list[int]]:
    return [tok("hello there " * lengths[i % len(lengths)] + str(i))["input_ids"] for i in range(n_distinct)]


class _Inputs:
    """Records the (rows, columns) of every decoder forward."""

    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, int]] = []
        decoder = getattr(model, model.base_model_prefix)
        self.handle = decoder.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.shapes.append(tuple(ids.shape))

    def prefill_rows(self) -> int:
        """Rows that ran a multi-token (prompt) forward."""
        return sum(rows for rows, cols in self.shapes if cols > 1)

    def close(self) -> None:
        self.handle.remove()


def test_shared_prefill_draws_the_same_tokens_and_prefills_each_prompt_once(tiny_model) -> None:
    model, tok = tiny_model
    distinct = _prompts(tok)
    rows = [p for p in distinct for _ in range(4)]
    outs, prefill = {}, {}
    for share in (False, True):
        probe = _Inputs(model)
        torch.manual_seed(0)
        outs[share] = sample(model, tok, rows, max_new_tokens=6, share_prefill=share)
        probe.close()
        prefill[share] = probe.prefill_rows()
    assert torch.equal(outs[True].completion_ids, outs[False].completion_ids)
    assert torch.equal(outs[True].completion_mask, outs[False].completion_mask)
    assert torch.equal(outs[True].prompt_ids, outs[False].prompt_ids)
    assert prefill[False] == len(rows)  # each row prefilled its own copy of the prompt
    assert prefill[True] == len(distinct)  # once per distinct prompt
    # the rollouts of one prompt differ from each other (they share the prompt, not the draws)
    assert len({tuple(r) for r in outs[True].completion_ids[:4].tolist()}) > 1


def test_shared_prefill_cache_matches_each_rows_own_prefill(tiny_model) -> None:
    """The expanded cache holds, row for row, what each row's own prefill computes (rows in any order)."""
    from harness.batching import pad, position_ids

    model, tok = tiny_model
    distinct = _prompts(tok)
    rows = [distinct[i] for i in (2, 0, 1, 0, 2, 2)]  # repeated, not grouped
    ids, mask = pad(rows, tok.pad_token_id, "left")
    with torch.no_grad():
        shared, n = shared_prefill(model, ids, mask)
        decoder = getattr(model, model.base_model_prefix)
        own = decoder(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=position_ids(mask[:, :-1]),
            use_cache=True,
        ).past_key_values
    assert n == 3
    for layer_shared, layer_own in zip(shared.layers, own.layers, strict=True):
        real = mask[:, :-1].bool()  # padded columns are never attended to
        for a, b in ((layer_shared.keys, layer_own.keys), (layer_shared.values, layer_own.values)):
            assert a.shape == b.shape
            torch.testing.assert_close(a.transpose(1, 2)[real], b.transpose(1, 2)[real], rtol=1e-5, atol=1e-5)
    assert shared_prefill(model, *pad(distinct, tok.pad_token_id, "left")) is None  # nothing to share


def test_rows_stop_at_end_of_turn_and_the_batch_when_all_have(tiny_model) -> None:
    """Force the end-of-turn token: row r at its (r+2)-th token; generation must stop after the last row's.
    On `generate` (the hook addresses rows by position, and the static decoder gathers ended rows out;
    tests/test_decoder.py checks its stopping against a brute-force reference)."""
    model, tok = tiny_model
    model = copy.deepcopy(model)
    eos = eos_ids(model, tok)[0]
    rows = [p for p in _prompts(tok, 2) for _ in range(2)]
    calls = {"n": 0}

    def force_eos(module, args, output):
        calls["n"] += 1
        step = calls["n"]  # call 1 predicts the first new token
        for row in range(output.shape[0]):
            if step == row + 2:
                output[row, -1] = -1e4
                output[row, -1, eos] = 1e4
        return output

    handle = model.get_output_embeddings().register_forward_hook(force_eos)
    try:
        torch.manual_seed(0)
        out = sample(model, tok, rows, max_new_tokens=20, decoder="hf")
    finally:
        handle.remove()
    assert out.lengths.tolist() == [2, 3, 4, 5]  # up to and including the end-of-turn token
    assert not out.truncated.any()
    assert calls["n"] == 5  # no step after the last row ended (20 were allowed)
    assert out.completion_ids.shape[1] == 5
    for row, n in enumerate(out.lengths.tolist()):
        assert out.completion_ids[row, n - 1] == eos
        assert (out.completion_ids[row, n:] == tok.pad_token_id).all()


def test_shared_prompt_forward_gives_the_same_hidden_states_and_gradients(tiny_model) -> None:
    """completion_hidden with rows repeating prompts: the prompt runs once per distinct prompt, and hidden
    states and weight gradients equal those of running every row whole (the gradient of a shared prompt is
    the sum over its rows)."""
    from harness.batching import collate, completion_hidden

    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    distinct = _prompts(tok)
    completions = [tok(f" answer number {i}" + " and more" * (i % 3))["input_ids"] for i in range(9)]
    prompts = [distinct[i % 3] for i in (0, 0, 0, 1, 1, 1, 2, 2, 2)]
    batch = collate(prompts, completions, tok.pad_token_id)
    weights = torch.randn(
        batch.completion_ids.shape + (model.config.hidden_size,), generator=torch.Generator().manual_seed(0)
    )
    hidden, grads, prefill = {}, {}, {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        probe = _Inputs(model)
        h = completion_hidden(model, batch, share_prompts=share)
        probe.close()
        prefill[share] = sum(rows for rows, cols in probe.shapes if cols >= batch.prompt_len)
        (h * weights * batch.completion_mask.unsqueeze(-1)).sum().backward()
        hidden[share] = h.detach()
        grads[share] = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    real = batch.completion_mask.bool()
    torch.testing.assert_close(hidden[True][real], hidden[False][real], rtol=1e-5, atol=1e-5)
    # float32 sums in another order: equal to a few ulps of the largest gradient
    scale = float(grads[False].abs().max())
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-5 * scale)
    assert scale > 0
    assert prefill == {False: 9, True: 3}  # rows through the prompt: every row vs each distinct prompt once
