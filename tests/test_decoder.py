"""The static-cache decoder (harness.decoding) against Hugging Face `generate` on the same prompts."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from harness.batching import pad
from harness.decoding.choose import pick
from harness.decoding.static import decode
from harness.decoding.warpers import Sampling, StopStrings, draw, filtered_logits
from harness.distill.rollout import eos_ids, sample

WORDS = "the cat sat on a mat while rain fell over quiet hills and rivers ran to the sea".split()


def _prompts(tok, n: int, seed: int = 0) -> list[list[int]]:
    """n chat prompts of mixed lengths (2 to 40 words), so the batch is left-padded unevenly."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = [WORDS[int(j)] for j in torch.randint(len(WORDS), (2 + (i * 7) % 39,), generator=g)]
        text = tok.apply_chat_template(
            [{"role": "user", "content": " ".join(words)}], tokenize=False, add_generation_prompt=True
        )
        out.append(tok(text, add_special_tokens=False)["input_ids"])
    return out


def _hf(model, tok, prompts, new: int, **kw) -> torch.Tensor:
    ids, mask = pad(prompts, tok.pad_token_id, "left")
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new,
        eos_token_id=eos_ids(model, tok),
        pad_token_id=tok.pad_token_id,
        **kw,
    )
    return out[:, ids.shape[1] :]


def _static(model, tok, prompts, new: int, sampling=None) -> torch.Tensor:
    ids, mask = pad(prompts, tok.pad_token_id, "left")
    with torch.no_grad():
        return decode(
            model,
            ids,
            mask,
            max_new_tokens=new,
            eos=eos_ids(model, tok),
            pad_id=tok.pad_token_id,
            sampling=sampling,
        )


def _same_tokens(a: torch.Tensor, b: torch.Tensor, pad_id: int) -> None:
    """Equal up to trailing padding (generate keeps stepping while any row runs; so does the decoder)."""
    width = max(a.shape[1], b.shape[1])
    a = torch.nn.functional.pad(a, (0, width - a.shape[1]), value=pad_id)
    b = torch.nn.functional.pad(b, (0, width - b.shape[1]), value=pad_id)
    assert torch.equal(a, b), (a != b).nonzero()[:5].tolist()


def test_greedy_matches_generate_tiny(tiny_model) -> None:
    model, tok = tiny_model
    model.eval()
    prompts = _prompts(tok, 8)
    _same_tokens(
        _static(model, tok, prompts, 12), _hf(model, tok, prompts, 12, do_sample=False), tok.pad_token_id
    )
    one = prompts[:1]  # no padding: the unmasked attention path
    _same_tokens(_static(model, tok, one, 12), _hf(model, tok, one, 12, do_sample=False), tok.pad_token_id)


def test_sampling_same_seed_same_tokens_tiny(tiny_model) -> None:
    """A seed fixes the static decoder's draws (its stream is not generate's: `draw` is inverse-CDF)."""
    model, tok = tiny_model
    model.eval()
    prompts = _prompts(tok, 6, seed=1)
    how = Sampling(temperature=0.7, top_p=0.9, top_k=40, min_p=0.02)
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(_static(model, tok, prompts, 10, how))
    _same_tokens(runs[0], runs[1], tok.pad_token_id)
    assert not torch.equal(runs[0], runs[2])  # another seed, other draws (the tiny model is near-uniform)


def test_draw_follows_the_given_probabilities() -> None:
    """200,000 draws per row: each token's frequency within 5 standard errors of its probability, and a
    token of probability 0 (between and after positive ones) never drawn."""
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0], [0.01, 0.0, 0.0, 0.0, 0.99]])
    torch.manual_seed(0)
    n = 200_000
    drawn = draw(probs.repeat_interleave(n, 0)).view(2, n)
    for row in range(2):
        freq = torch.bincount(drawn[row], minlength=5).double() / n
        se = (probs[row].double() * (1 - probs[row].double()) / n).sqrt()
        assert torch.all((freq - probs[row].double()).abs() <= 5 * se + 1e-12), (row, freq)
        assert torch.all(freq[probs[row] == 0] == 0)


def test_filters_against_hand_computed_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -5.0]])
    p = torch.softmax(logits / 0.5, -1)[0]
    # top_k=3 keeps the three largest; top_p=0.99 of what is left keeps while the low tail < 1%
    kept = filtered_logits(logits, Sampling(temperature=0.5, top_k=3))
    assert torch.isinf(kept[0, 3:]).all() and torch.isfinite(kept[0, :3]).all()
    tail = p[3] + p[4]  # the two smallest after temperature hold less than 1 - 0.995 of the mass?
    kept = filtered_logits(logits, Sampling(temperature=0.5, top_p=1 - float(tail) * 1.01))
    assert torch.isinf(kept[0, 3:]).all() and torch.isfinite(kept[0, :3]).all()
    # min_p: tokens under 0.1 x the top probability go
    kept = filtered_logits(logits, Sampling(min_p=0.1))
    q = torch.softmax(logits, -1)[0]
    assert torch.equal(torch.isfinite(kept[0]), q >= 0.1 * q.max())


def test_stop_strings_look_at_a_fixed_window(tiny_model) -> None:
    _, tok = tiny_model
    stops = StopStrings(tok, ["\n\n"])
    rows = [
        tok("Answer: 4\n\nNext", add_special_tokens=False)["input_ids"],
        tok("Answer: 4", add_special_tokens=False)["input_ids"],
    ]
    width = min(len(r) for r in rows)
    recent = torch.tensor([r[-width:] for r in rows])
    assert stops.hits(recent).tolist() == [True, False]
    assert stops.window == 4 * 2 + 2


def test_pick_falls_back_with_a_reason() -> None:
    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "gpt2"})()

    name, why = pick(Fake(), "static")
    assert name == "hf" and "gpt2" in why
    with pytest.raises(ValueError, match="decoder 'fast' not known"):
        pick(Fake(), "fast")


def test_rollouts_keep_working_with_several_per_prompt(tiny_model) -> None:
    """Repeated prompts (shared prefill) and top-k=1 sampling: both decoders write the same rollouts."""
    model, tok = tiny_model
    prompts = [p for p in _prompts(tok, 3, seed=2) for _ in range(3)]
    kw = {"max_new_tokens": 8, "top_k": 1}
    a, b = (
        sample(model, tok, prompts, decoder="static", **kw),
        sample(model, tok, prompts, decoder="hf", **kw),
    )
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.truncated, b.truncated)


def _items(result) -> list[tuple]:
    return sorted(
        (r["task"], r["doc_id"], str(r["filter"]), r["generation"], tuple(sorted(r["scores"].items())))
        for r in result.items
    )


def test_lm_eval_and_greedy_scores_same_items_either_decoder(tiny_model) -> None:
    """The plumbing: lm-eval through our HFLM subclass and the in-context scorer give the items, generations
    and scores of lm-eval's / generate's own path (the tiny model never ends by itself: 8 tokens)."""
    from harness.eval.lmeval import evaluate
    from harness.eval.scoring import greedy_responses
    from harness.tasks.spec import TASKS_ROOT, resolve_task

    model, tok = tiny_model
    names = ["general_arith", "dates", "general_mc"]
    kw = {"limit": 3, "batch_size": 4, "max_gen_toks": 8}
    paths = [TASKS_ROOT / n for n in names]
    static, hf = (evaluate(model, tok, names, paths, decoder=d, **kw) for d in ("static", "hf"))
    assert _items(static) == _items(hf) and len(static.items) >= 9
    spec = resolve_task("dates")
    docs = [json.loads(line) for line in spec.eval_file.read_text().splitlines()[:4]]
    a, b = (
        greedy_responses(model, tok, spec, docs, "in_context", max_new_tokens=8, decoder=d)
        for d in ("static", "hf")
    )
    assert a == b


def _varied(tiny_model):
    """A copy of the tiny model with large random matrices: its greedy rows vary token to token (the
    initialised one repeats a single token), so rows can be made to end at different steps."""
    model, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval(), tok


def test_rows_end_at_their_first_stop_token_and_ended_rows_are_gathered_out(tiny_model) -> None:
    """Greedy rows are deterministic, so the stopped decode must equal the unstopped one cut after each row's
    first stop token (brute force), while rows end at different steps and are gathered out of the cache."""
    model, tok = _varied(tiny_model)
    prompts = _prompts(tok, 8, seed=4)
    ids, mask = pad(prompts, tok.pad_token_id, "left")
    with torch.no_grad():
        free = decode(model, ids, mask, max_new_tokens=16, eos=[-1], pad_id=tok.pad_token_id)
        # stop tokens: what rows 0-3 wrote at steps 2, 4, 6, 8: rows end at different steps
        stops = sorted({int(free[r, 2 + 2 * r]) for r in range(4)})
        calls = {"n": 0}
        # the final norm runs once in the prefill and once per step (the LM head may be a packed product)
        handle = getattr(model, model.base_model_prefix).norm.register_forward_hook(
            lambda *a: calls.__setitem__("n", calls["n"] + 1)
        )
        try:
            got = decode(model, ids, mask, max_new_tokens=16, eos=stops, pad_id=tok.pad_token_id)
        finally:
            handle.remove()
    expected, ends = torch.full_like(free, tok.pad_token_id), []
    for r in range(free.shape[0]):
        hit = [t for t in range(16) if int(free[r, t]) in stops]
        ends.append(hit[0] + 1 if hit else 16)
        expected[r, : ends[-1]] = free[r, : ends[-1]]
    width = max(ends)
    assert len(set(ends)) > 2  # rows end at several different steps: gathers happen
    assert torch.equal(got, expected[:, : got.shape[1]]) and got.shape[1] == width
    assert calls["n"] == width  # the prefill's norm, then one step per token until the last row ended
