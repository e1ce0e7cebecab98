"""Learning with the real embedded model: a few steps on invented facts raise the student's log-probability
of the answers given the question alone (no passage, no demonstration in its context)."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import collate, completion_hidden, encode_demonstration
from harness.config import Config
from harness.methods import StageContext, get_method
from harness.tasks import Item

FACTS = [  # invented, so the base model cannot know them
    ("Zorvath", "Quellmire", "teal"), ("Brindlecap", "Ostravane", "amber"), ("Pelloran", "Duskhollow", "violet"),
    ("Mirthwold", "Caskberry", "crimson"), ("Tanquil", "Ferrowind", "ochre"), ("Vessaline", "Glimmerfen", "jade"),
    ("Orrimund", "Saltreach", "indigo"), ("Quistell", "Bramblehold", "silver"),
]
ITEMS = [
    Item(prompt=f"In which town was the inventor {name} born?",
         demonstration=f"{name} was born in {town}.",
         privileged=f"{name}, the inventor of the {colour} lamp, was born in the town of {town}.",
         id=name, source=f"inline:{i}")
    for i, (name, town, colour) in enumerate(FACTS)
]


@torch.no_grad()
def mean_token_logprob(model, tok, items) -> float:
    """Per-token log-probability of each demonstration given its prompt alone, averaged over items."""
    pairs = [encode_demonstration(tok, it, 512) for it in items]
    batch = collate([p for p, _ in pairs], [c for _, c in pairs], tok.pad_token_id)
    logp = torch.log_softmax(model.get_output_embeddings()(completion_hidden(model, batch)), -1)
    token = logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1) * batch.completion_mask
    return float((token.sum(-1) / batch.completion_mask.sum(-1)).mean())


def _cfg(method: str, steps: int, lr: float, **distill):
    cfg = OmegaConf.structured(Config)
    cfg.method.name = method
    cfg.method.distill.update(distill)
    cfg.trainer.update({"batch_size": 8, "max_steps": steps, "warmup_steps": 0, "lr": lr})
    return cfg


@pytest.mark.slow
def test_sft_learns_invented_facts(real_model) -> None:
    model, tok = real_model
    model = copy.deepcopy(model)
    before = mean_token_logprob(model, tok, ITEMS)
    stats = get_method("sft")(model, tok, ITEMS, None, _cfg("sft", 4, 2e-4), StageContext(seed=0))
    after = mean_token_logprob(model, tok, ITEMS)
    assert stats.steps[-1]["loss"] < stats.steps[0]["loss"]
    assert after > before + 0.5, (before, after)


@pytest.mark.slow
def test_sdft_learns_invented_facts(real_model) -> None:
    model, tok = real_model
    model = copy.deepcopy(model)
    before = mean_token_logprob(model, tok, ITEMS)
    torch.manual_seed(0)
    cfg = _cfg("sdft", 4, 2e-4, max_new_tokens=16, skip_tokens=0, template="plain", teacher="ema")
    stats = get_method("sdft")(model, tok, ITEMS, None, cfg, StageContext(seed=0))
    after = mean_token_logprob(model, tok, ITEMS)
    print("sdft", before, after, [round(s["loss"], 3) for s in stats.steps])
    assert after > before + 0.3, (before, after)
