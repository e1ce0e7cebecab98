"""Label-smoothed SFT (harness/methods/sft_ls.py) against torch's own label-smoothed cross-entropy.

The reference runs each item alone, unpadded, through the plain model and applies
`torch.nn.functional.cross_entropy(..., label_smoothing=epsilon)` to the demonstration positions: a second,
independent implementation of the same loss.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import encode_demonstration
from harness.config import Config
from harness.methods import method_spec, train_stage
from harness.methods.base import StageContext
from harness.methods.sft import SupervisedStep
from harness.methods.sft_ls import smoothed_nll
from harness.run.validate import validate
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="t:2"),
    Item(prompt="2+2?", demonstration="4", id="c", source="t:3"),
]


def _cfg(epsilon: float = 0.2):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.name = "sft_ls"
    cfg.method.options = {"epsilon": epsilon}
    cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.warmup_steps = 3, 2, 1e-2, 0
    cfg.stream.name, cfg.stream.tasks = "s", ["tooluse"]
    cfg.suite.name = "none"
    return cfg


def _reference(model, tok, items, epsilon: float) -> torch.Tensor:
    """Batch token mean of torch's label-smoothed cross-entropy over the demonstration tokens."""
    total, terms = 0, []
    for item in items:
        prompt, demo = encode_demonstration(tok, item, 256)
        logits = model(input_ids=torch.tensor([prompt + demo])).logits[0, len(prompt) - 1 : -1]
        loss = torch.nn.functional.cross_entropy(
            logits.float(), torch.tensor(demo), label_smoothing=epsilon, reduction="sum"
        )
        terms.append(loss)
        total += len(demo)
    return sum(terms) / total


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_loss_and_gradients_match_torch_label_smoothing(tiny_model, epsilon: float) -> None:
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    ref = copy.deepcopy(model)
    step = SupervisedStep(model, tok, 5, 256, smoothed_nll(epsilon))  # chunk 5: several chunks per batch
    loss = 0.0
    for micro in (ITEMS[:2], ITEMS[2:]):  # two micro-batches of one step, normalised by the whole batch
        micro_loss, _ = step(micro, ITEMS)
        micro_loss.backward()
        loss += micro_loss.item()
    want = _reference(ref, tok, ITEMS, epsilon)
    want.backward()
    assert loss == pytest.approx(want.item(), abs=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_stage_trains_through_the_registry(tiny_model) -> None:
    model, tok = tiny_model
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_stage(model, tok, ITEMS, None, _cfg(), StageContext())
    assert len(stats.steps) == 2 and all(s["loss"] > 0 for s in stats.steps)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert method_spec("sft_ls").settings(OmegaConf.to_object(_cfg(0.3).method)).epsilon == 0.3


def test_bad_epsilon_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match=r"epsilon=1.5: must be in \[0, 1\)"):
        validate(_cfg(1.5))
    with pytest.raises(ValueError, match="method.options.eps is not an option of 'sft_ls'; valid: epsilon"):
        cfg = _cfg()
        cfg.method.options = {"eps": 0.1}
        validate(cfg)
