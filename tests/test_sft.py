"""SFT against a plain transformers `labels=` forward: same loss and same parameter gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import encode_demonstration
from harness.config import Config
from harness.methods.sft import SupervisedStep, token_dft
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        demonstration="4",
        id="b",
        source="t:2",
    ),
    Item(
        prompt="Say hello in French, please, and explain nothing else.",
        demonstration="Bonjour !",
        id="c",
        source="t:3",
    ),
]


def _cfg(chunk: int = 5):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.sft.loss_chunk_size = chunk  # several chunks per batch
    return cfg


def _reference(model, tok, items, weighted: bool = False):
    """Token-mean cross-entropy over all demonstration tokens via transformers' own labels= loss.

    Each item is run alone, unpadded; per-item mean losses are recombined into the batch token mean.
    """
    total = 0
    terms = []
    for item in items:
        prompt, demo = encode_demonstration(tok, item, 256)
        ids = torch.tensor([prompt + demo])
        labels = torch.tensor([[-100] * len(prompt) + demo])
        if weighted:  # DFT by hand: -p.detach() * log p on each demonstration token
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(demo).unsqueeze(-1)).squeeze(-1)
            terms.append((-(logp.detach().exp()) * logp).sum())
        else:
            terms.append(model(input_ids=ids, labels=labels).loss * len(demo))
        total += len(demo)
    return sum(terms) / total


@pytest.mark.parametrize("weighted", [False, True], ids=["sft", "dft"])
def test_supervised_loss_and_grads_match_transformers(tiny_model, weighted: bool) -> None:
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    ref = copy.deepcopy(model)
    cfg = _cfg()
    step = SupervisedStep(
        model,
        tok,
        cfg.method.sft.loss_chunk_size,
        cfg.model.max_length,
        token_dft if weighted else _nll(),
    )
    # two micro-batches of one step: the loss normaliser is the whole batch's token count; the step returns
    # each micro-batch's loss and the caller (run_stage) runs backward on it
    loss = 0.0
    for micro in (ITEMS[:2], ITEMS[2:]):
        micro_loss, _ = step(micro, ITEMS)
        micro_loss.backward()
        loss += micro_loss.item()
    want = _reference(ref, tok, ITEMS, weighted)
    want.backward()
    assert loss == pytest.approx(want.item(), abs=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def _nll():
    from harness.methods.sft import token_nll

    return token_nll


def test_prompt_and_padding_get_no_gradient(tiny_model) -> None:
    """Gradient w.r.t. the decoder's output hidden states is zero at prompt and padding positions."""
    from harness.batching import collate
    from harness.distill.fused_head import fused_head_loss
    from harness.methods.sft import token_nll

    model, tok = tiny_model
    pairs = [encode_demonstration(tok, it, 256) for it in ITEMS]
    batch = collate([p for p, _ in pairs], [c for _, c in pairs], tok.pad_token_id)
    decoder = getattr(model, model.base_model_prefix)
    out = decoder(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).last_hidden_state
    out.retain_grad()
    P, C = batch.prompt_len, batch.completion_ids.shape[1]
    hidden = out[:, P - 1 : P - 1 + C]
    mask = batch.completion_mask.bool()
    targets = batch.completion_ids[mask]
    loss = fused_head_loss(
        hidden[mask],
        model.get_output_embeddings(),
        torch.ones(targets.numel()),
        lambda lg, s, e: token_nll(lg, targets[s:e]),
        4,
    )
    loss.backward()
    per_position = out.grad.abs().sum(-1)  # [B, P + C]
    for row, (_prompt, demo) in enumerate(pairs):
        predicting = torch.zeros(P + C, dtype=torch.bool)
        predicting[P - 1 : P - 1 + len(demo)] = True  # positions whose next token is a demonstration token
        assert (per_position[row][~predicting] == 0).all()
        assert (per_position[row][predicting] > 0).all()
    model.zero_grad(set_to_none=True)
