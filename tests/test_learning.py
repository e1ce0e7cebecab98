"""Learning with the real embedded model: a few steps on invented facts raise the student's log-probability
of the answers given the question alone (no passage, no demonstration in its context)."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import collate, completion_hidden, encode_demonstration
from harness.config import Config
from harness.methods import StageContext, train_stage
from harness.tasks.spec import Item

FACTS = [  # invented, so the base model cannot know them
    ("Zorvath", "Quellmire", "teal"),
    ("Brindlecap", "Ostravane", "amber"),
    ("Pelloran", "Duskhollow", "violet"),
    ("Mirthwold", "Caskberry", "crimson"),
    ("Tanquil", "Ferrowind", "ochre"),
    ("Vessaline", "Glimmerfen", "jade"),
    ("Orrimund", "Saltreach", "indigo"),
    ("Quistell", "Bramblehold", "silver"),
]
ITEMS = [
    Item(
        prompt=[
            {"role": "system", "content": "Answer briefly."},  # shorter than the default system prompt
            {"role": "user", "content": f"In which town was the inventor {name} born?"},
        ],
        demonstration=f"The inventor {name} was born in the town of {town}.",
        privileged=f"{name}, the inventor of the {colour} lamp, was born in the town of {town}.",
        id=name,
        source=f"inline:{i}",
    )
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
    cfg.trainer.update({"batch_size": 8, "epochs": 100.0, "max_steps": steps, "warmup_steps": 0, "lr": lr})
    return cfg


@pytest.fixture
def one_thread():
    """One intra-op thread: on this shared 2-core machine two OpenMP threads spin against other processes and
    run several times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_sft_learns_invented_facts(real_model, one_thread) -> None:
    model, tok = real_model
    model = copy.deepcopy(model)
    before = mean_token_logprob(model, tok, ITEMS)
    stats = train_stage(model, tok, ITEMS, None, _cfg("sft", 2, 2e-4), StageContext(seed=0))
    after = mean_token_logprob(model, tok, ITEMS)
    assert stats.steps[-1]["loss"] < stats.steps[0]["loss"]
    assert after > before + 0.5, (before, after)  # measured: -1.88 -> -0.66


@pytest.mark.slow
def test_sdft_learns_invented_facts(real_model, one_thread) -> None:
    """The teacher sees the passage and the demonstration; the student only the question. A few on-policy
    steps raise the demonstrations' log-probability, far less than SFT does in as many steps: SDFT's signal
    reaches the answer only through the student's own rollouts. Measured gains after 4 steps from -1.88,
    seeds 0/1/2: static decoder +0.10/+0.24/+0.17, `generate` +0.18/+0.24/+0.17; the two decoders draw
    different rollouts, so the threshold sits below the spread of realizations, well above no learning (0)."""
    model, tok = real_model
    model = copy.deepcopy(model)
    before = mean_token_logprob(model, tok, ITEMS)
    cfg = _cfg("sdft", 4, 5e-5, max_new_tokens=16, skip_tokens=0, template="plain", teacher="ema")
    train_stage(model, tok, ITEMS, None, cfg, StageContext(seed=0))
    after = mean_token_logprob(model, tok, ITEMS)
    assert after > before + 0.05, (before, after)
