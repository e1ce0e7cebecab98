"""The static-cache decoder on the real model: the same greedy tokens as `generate`, the same sampling
distribution, the same SDFT stage, the same lm-eval item scores (marked slow: each runs in seconds)."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import chat_prompt_ids, pad
from harness.config import Config
from harness.decoding.packed import packing_unavailable, unpacked
from harness.decoding.static import StaticDecoder, decode
from harness.decoding.warpers import Sampling, filtered_logits
from harness.distill.rollout import eos_ids
from harness.tasks.spec import Item

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is 2+2?",
    "Name a colour.",
    "Write one sentence about the sea.",
    "List three fruits, separated by commas, and say which one you like best and why in a few words.",
    "Hi",
    "Translate 'good morning' into French.",
    "What is the capital of Italy? Answer with one word.",
    "Explain in two sentences why the sky looks blue during the day and red at sunset.",
]


def _prompts(tok, n: int) -> list[list[int]]:
    """n chat prompts of mixed lengths: the questions, some repeated with a numbered suffix."""
    return [
        chat_prompt_ids(tok, [{"role": "user", "content": QUESTIONS[i % 8] + (f" ({i})" if i >= 8 else "")}])
        for i in range(n)
    ]


def _padded(a: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    return torch.nn.functional.pad(a, (0, width - a.shape[1]), value=pad_id)


def test_greedy_is_token_for_token_generate_on_32_prompts(real_model) -> None:
    model, tok = real_model
    model.eval()
    prompts, new = _prompts(tok, 32), 20
    for start in (0, 16):  # two batches of 16, as greedy evaluation batches them
        ids, mask = pad(prompts[start : start + 16], tok.pad_token_id, "left")
        with torch.no_grad():
            ours = decode(
                model, ids, mask, max_new_tokens=new, eos=eos_ids(model, tok), pad_id=tok.pad_token_id
            )
            ref = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                do_sample=False,
                eos_token_id=eos_ids(model, tok),
                pad_token_id=tok.pad_token_id,
            )[:, ids.shape[1] :]
        width = max(ours.shape[1], ref.shape[1])
        assert torch.equal(_padded(ours, width, tok.pad_token_id), _padded(ref, width, tok.pad_token_id))


# KL(generate's filtered next-token distribution || ours), nats, per row and step; measured ~1e-12 here
KL_TOLERANCE = 1e-5


def test_sampled_distribution_matches_generate(real_model) -> None:
    """On generate's sampled tokens, the filtered next-token distribution of the first 6 steps agrees within
    KL_TOLERANCE nats (the draws themselves differ: harness.decoding.warpers.draw is inverse-CDF, checked
    against hand-set probabilities in tests/test_decoder.py)."""
    model, tok = real_model
    model.eval()
    ids, mask = pad(_prompts(tok, 8), tok.pad_token_id, "left")
    how = Sampling(temperature=0.8, top_p=0.95, top_k=50, min_p=0.01)
    stops, steps = eos_ids(model, tok), 6
    with torch.no_grad():
        torch.manual_seed(11)
        ref = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=steps,
            do_sample=True,
            temperature=0.8,
            top_p=0.95,
            top_k=50,
            min_p=0.01,
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        ours = decode(
            model, ids, mask, max_new_tokens=steps, eos=stops, pad_id=tok.pad_token_id, sampling=how
        )
        drawn = ref.sequences[:, ids.shape[1] :]
        dec = StaticDecoder(model, ids, mask, steps)
        logits = dec.first_logits
        # our own first draws are tokens the filters keep
        assert torch.isfinite(filtered_logits(logits, how).gather(1, ours[:, :1])).all()
        for t, scores in enumerate(ref.scores):
            p_ref = torch.log_softmax(scores.float(), -1)
            p_ours = torch.log_softmax(filtered_logits(logits, how), -1)
            assert torch.equal(torch.isinf(p_ref), torch.isinf(p_ours)), f"step {t}: different tokens kept"
            kept = torch.isfinite(p_ref)
            kl = (p_ref.exp() * torch.where(kept, p_ref - p_ours, 0.0)).sum(-1)
            assert float(kl.abs().max()) < KL_TOLERANCE, (t, kl)
            logits = dec.step(drawn[:, t])


# largest |logit difference| between the packed oneDNN products and F.linear on the same tokens; the kernels
# sum in another order (measured below 1e-4 on the embedded model in float32)
PACKED_LOGIT_TOLERANCE = 1e-3


def test_packed_products_give_the_logits_of_the_models_own_modules(real_model) -> None:
    """Teacher-forced on generate's greedy tokens, 16 steps of 16 prompts: the packed decode's logits are
    F.linear's within PACKED_LOGIT_TOLERANCE (a greedy token can flip only where the top two are that close)."""
    model, tok = real_model
    model.eval()
    assert packing_unavailable(model) is None
    ids, mask = pad(_prompts(tok, 16), tok.pad_token_id, "left")
    with torch.no_grad():
        tokens = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )[:, ids.shape[1] :]
        packed = StaticDecoder(model, ids, mask, 16)
        with unpacked():
            plain = StaticDecoder(model, ids, mask, 16)
        assert packed.head is not model.lm_head and plain.head is model.lm_head  # the two paths ran
        worst = float((packed.first_logits - plain.first_logits).abs().max())
        for t in range(15):
            worst = max(worst, float((packed.step(tokens[:, t]) - plain.step(tokens[:, t])).abs().max()))
    assert 0 < worst < PACKED_LOGIT_TOLERANCE, worst


def _stage(model, tok, decoder: str) -> tuple[list[list[int]], list[float]]:
    """One SDFT stage (2 steps of 2 items) with greedy rollouts (top_k=1), recording every rollout."""
    from harness.methods import StageContext, sdft, train_stage

    written: list[list[int]] = []
    real = sdft.sample

    def spy(*args, **kw):
        out = real(*args, **kw)
        written.extend(out.completion_ids[r, : int(out.lengths[r])].tolist() for r in range(len(out.lengths)))
        return out

    cfg = OmegaConf.structured(Config)
    cfg.method.name = "sdft"
    cfg.method.distill.update({"top_k": 1, "max_new_tokens": 16, "decoder": decoder, "probe_items": 0})
    cfg.trainer.update({"batch_size": 2, "max_steps": 2, "warmup_steps": 0, "lr": 1e-5})
    items = [Item(prompt=q, demonstration="A short answer.") for q in QUESTIONS[:4]]
    sdft.sample = spy
    try:
        stats = train_stage(copy.deepcopy(model), tok, items, None, cfg, StageContext(seed=0))
    finally:
        sdft.sample = real
    return written, [s["loss"] for s in stats.steps]


# relative difference of the two stages' losses; identical rollouts leave only the order of float sums
LOSS_TOLERANCE = 1e-6


def test_sdft_stage_same_rollouts_and_losses_with_either_decoder(real_model) -> None:
    """The static decoder's loop on the model's own modules (no packing: the kernels are `generate`'s, so
    greedy rollouts must match exactly; the packed products are checked against them above)."""
    model, tok = real_model
    with unpacked():
        rollouts_static, losses_static = _stage(model, tok, "static")
    rollouts_hf, losses_hf = _stage(model, tok, "hf")
    assert rollouts_static == rollouts_hf and len(rollouts_static) == 4
    for a, b in zip(losses_static, losses_hf, strict=True):
        assert abs(a - b) <= LOSS_TOLERANCE * max(abs(b), 1e-12), (losses_static, losses_hf)


def test_lm_eval_item_scores_match_lm_evals_own_path(real_model) -> None:
    """Built-in tasks through lm-eval: our HFLM subclass (static decoder) and lm-eval's own HFLM give the
    same generations and item scores (generation tasks ending at `until` or EOS, one loglikelihood task)."""
    from harness.eval.lmeval import evaluate
    from harness.tasks.spec import TASKS_ROOT

    model, tok = real_model
    names = ["general_arith", "dates", "general_mc"]
    paths = [TASKS_ROOT / n for n in names]
    static, hf = (
        evaluate(model, tok, names, paths, limit=4, batch_size=4, decoder=d) for d in ("static", "hf")
    )

    def rows(result):
        return sorted(
            (r["task"], r["doc_id"], r["generation"], tuple(sorted(r["scores"].items())))
            for r in result.items
        )

    assert rows(static) == rows(hf) and len(static.items) >= 12
