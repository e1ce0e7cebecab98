"""SFT with a confidence penalty (harness/methods/sft_cp.py) against an independent reference.

The reference runs each item alone, unpadded, through the plain model and adds torch's own pieces:
`cross_entropy` for the demonstration tokens and `torch.distributions.Categorical(logits=...).entropy()` for
the penalty, summed over the demonstration positions and divided by the batch's token count.
"""

from __future__ import annotations

import copy

import pytest
import torch

from harness.batching import encode_demonstration
from harness.cli import compose
from harness.methods import StageContext, method_spec, train_stage
from harness.methods.sft import SupervisedStep
from harness.methods.sft_cp import penalised_nll
from harness.run.validate import typed
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="t:2"),
    Item(prompt="2+2?", demonstration="4", id="c", source="t:3"),
]


def _reference(model, tok, items, beta: float) -> torch.Tensor:
    total, terms = 0, []
    for item in items:
        prompt, demo = encode_demonstration(tok, item, 256)
        logits = model(input_ids=torch.tensor([prompt + demo])).logits[0, len(prompt) - 1 : -1].float()
        ce = torch.nn.functional.cross_entropy(logits, torch.tensor(demo), reduction="sum")
        entropy = torch.distributions.Categorical(logits=logits).entropy().sum()
        terms.append(ce - beta * entropy)
        total += len(demo)
    return sum(terms) / total


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_loss_and_gradients_match_cross_entropy_minus_entropy(tiny_model, beta: float) -> None:
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    ref = copy.deepcopy(model)
    step = SupervisedStep(model, tok, 5, 256, penalised_nll(beta))  # chunk 5: several chunks per batch
    loss = 0.0
    for micro in (ITEMS[:2], ITEMS[2:]):  # two micro-batches of one step, normalised by the whole batch
        micro_loss, _ = step(micro, ITEMS)
        micro_loss.backward()
        loss += micro_loss.item()
    want = _reference(ref, tok, ITEMS, beta)
    want.backward()
    assert loss == pytest.approx(want.item(), abs=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_stage_trains_through_the_registry_with_its_options(tiny_model) -> None:
    model, tok = tiny_model
    model = copy.deepcopy(model)
    base = ["model=tiny", "model.max_length=256", "method=sft_cp", "trainer.batch_size=3"]
    cfg = typed(compose([*base, "trainer.max_steps=2", "trainer.warmup_steps=0", "method.options.beta=0.3"]))
    assert method_spec("sft_cp").settings(cfg.method).beta == 0.3
    assert typed(compose(base)).method.options == {"beta": 0.1}  # the dataclass's default
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_stage(model, tok, ITEMS, None, cfg, StageContext())
    assert len(stats.steps) == 2 and all(torch.isfinite(torch.tensor(s["loss"])) for s in stats.steps)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_negative_beta_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"method.options.beta=-1(\.0)?: must be >= 0"):
        compose(["method=sft_cp", "method.options.beta=-1"])
