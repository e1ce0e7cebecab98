"""The SDFT loss against TRL's reference code on fixed logits; masking; loud teacher-truncation errors."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.distill.loss import DistillSettings, distillation_loss
from harness.tasks.spec import Item

trl_sdft = pytest.importorskip("trl.experimental.sdft.sdft_trainer")

B, C, V = 3, 9, 11


def _trl_loss(student_logits, teacher_logits, completion_ids, completion_mask, skip, mode, alpha, topk, tail):
    """TRL's own `_compute_self_distillation_loss` (divergence + per-sequence then batch mean).

    The loss mask is built exactly as TRL's `_compute_teacher_student_logits` builds it.
    """
    positions = torch.arange(completion_mask.size(1)).unsqueeze(0)
    loss_mask = completion_mask * (positions >= skip).long()
    host = SimpleNamespace(
        args=SimpleNamespace(
            distillation_mode=mode,
            distillation_topk=topk,
            distillation_alpha=alpha,
            distillation_add_tail=tail,
            distillation_is_clip=None,
        ),
        accelerator=SimpleNamespace(gather=lambda x: x),
        _log_self_distillation_metric=lambda mode, value: None,
    )
    logits = trl_sdft.DistillationLogits(completion_ids, loss_mask, student_logits, teacher_logits)
    return trl_sdft.SDFTTrainer._compute_self_distillation_loss(
        host, SimpleNamespace(training=True), {}, logits
    )


def _identity_head() -> torch.nn.Linear:
    head = torch.nn.Linear(V, V, bias=False, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.eye(V))
    return head


CASES = [  # (our divergence, beta, support, tail) <-> (TRL mode, alpha)
    ("forward", 0.5, "full", False, "full_logits", 0.0),
    ("reverse", 0.5, "full", False, "full_logits", 1.0),
    ("jsd", 0.3, "full", False, "full_logits", 0.3),
    ("forward", 0.5, "topk", True, "topk_logits", 0.0),
    ("forward", 0.5, "topk", False, "topk_logits", 0.0),
    ("jsd", 0.5, "topk", True, "topk_logits", 0.5),
    ("reverse", 0.5, "sampled", False, "sampled_token", 1.0),
]


@pytest.mark.parametrize("kind,beta,support,tail,mode,alpha", CASES)
@pytest.mark.parametrize("skip,temperature", [(3, 1.0), (0, 0.7)])
def test_loss_and_gradient_match_trl(kind, beta, support, tail, mode, alpha, skip, temperature) -> None:
    # float64: the top-k tail bucket is 1 - (captured mass), which float32 rounding alone can move by 1e-5
    gen = torch.Generator().manual_seed(11)
    student = torch.randn(B, C, V, generator=gen, dtype=torch.float64) * 2
    teacher = torch.randn(B, C, V, generator=gen, dtype=torch.float64) * 2
    ids = torch.randint(V, (B, C), generator=gen)
    lengths = torch.tensor([C, 5, 2])  # a full row, a short row, one shorter than skip
    mask = (torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)).long()

    # ours: hidden states = logits through identity heads, so the heads produce exactly these logits
    hidden = student.clone().requires_grad_(True)
    settings = DistillSettings(
        divergence=kind,
        beta=beta,
        support=support,
        topk=4,
        tail=tail,
        skip_tokens=skip,
        temperature=temperature,
        chunk_size=4,
    )
    ours, _ = distillation_loss(hidden, teacher, _identity_head(), _identity_head(), ids, mask, settings)
    ours.backward()

    ref_logits = (student / temperature).requires_grad_(True)  # TRL divides by the temperature in its forward
    ref = _trl_loss(ref_logits, teacher / temperature, ids, mask, skip, mode, alpha, 4, tail)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    # d/d(student) = d/d(student/T) / T; padding rows are zero on both sides
    torch.testing.assert_close(hidden.grad, ref_logits.grad / temperature, rtol=1e-4, atol=1e-6)


def test_padding_and_skipped_tokens_get_no_gradient() -> None:
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(B, C, V, generator=gen, dtype=torch.float64).requires_grad_(True)
    teacher = torch.randn(B, C, V, generator=gen, dtype=torch.float64)
    ids = torch.randint(V, (B, C), generator=gen)
    lengths = torch.tensor([C, 6, 4])
    mask = (torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)).long()
    loss, _ = distillation_loss(
        hidden,
        teacher,
        _identity_head(),
        _identity_head(),
        ids,
        mask,
        DistillSettings(skip_tokens=3, chunk_size=5),
    )
    loss.backward()
    per_position = hidden.grad.abs().sum(-1)
    for row, n in enumerate(lengths.tolist()):
        assert (per_position[row, :3] == 0).all()  # skipped
        assert (per_position[row, n:] == 0).all()  # padding
        assert (per_position[row, 3:n] > 0).all()


def _cfg(**distill):
    cfg = OmegaConf.structured(Config)
    cfg.method.distill.update(distill)
    cfg.trainer.update({"batch_size": 2, "max_steps": 1, "warmup_steps": 0, "lr": 1e-3})
    return cfg


def test_prompt_positions_get_no_gradient_in_a_real_step(tiny_model) -> None:
    """Through the decoder of the tiny model: zero gradient at the output hidden states of prompt positions,
    padding and skipped tokens; non-zero at trained completion positions."""
    from harness.batching import chat_prompt_ids, completion_hidden, join, pad
    from harness.distill.rollout import sample
    from harness.tasks.spec import student_messages

    model, tok = tiny_model
    items = [Item(prompt="Hi there, who are you?", demonstration="x"), Item(prompt="2+2?", demonstration="4")]
    prompts = [chat_prompt_ids(tok, student_messages(it)) for it in items]
    torch.manual_seed(0)
    out = sample(model, tok, prompts, max_new_tokens=7)
    out.completion_mask[1, 5:] = 0  # make one completion shorter, as if it had ended
    batch = join(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask)
    decoder = getattr(model, model.base_model_prefix)
    states = decoder(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).last_hidden_state
    states.retain_grad()
    P, C = batch.prompt_len, batch.completion_ids.shape[1]
    with torch.no_grad():
        teacher_hidden = completion_hidden(model, batch) + 0.1  # any other distribution
    loss, _ = distillation_loss(
        states[:, P - 1 : P - 1 + C],
        teacher_hidden,
        model.get_output_embeddings(),
        model.get_output_embeddings(),
        batch.completion_ids,
        batch.completion_mask,
        DistillSettings(skip_tokens=2),
    )
    loss.backward()
    g = states.grad.abs().sum(-1)
    for row, n in enumerate(out.completion_mask.sum(-1).tolist()):
        trained = torch.zeros(P + C, dtype=torch.bool)
        trained[P - 1 + 2 : P - 1 + n] = True
        assert (g[row][~trained] == 0).all()
        assert (g[row][trained] > 0).all()
    model.zero_grad(set_to_none=True)
    assert pad([[1]], 0, "left")[0].tolist() == [[1]]


def test_truncated_teacher_prompt_raises_naming_the_item(tiny_model) -> None:
    from harness.methods import StageContext, train_stage

    model, tok = tiny_model
    model = copy.deepcopy(model)
    long_demo = "word " * 200
    items = [
        Item(prompt="Q?", demonstration="A."),
        Item(prompt="Q2?", demonstration=long_demo, id="long-one", source="train.jsonl:2"),
    ]
    cfg = _cfg(max_new_tokens=4, skip_tokens=0)
    cfg.model.max_length = 150
    with pytest.raises(ValueError, match=r"train.jsonl:2 id=long-one.*teacher prompt"):
        train_stage(model, tok, items, None, cfg, StageContext())


def test_teacher_prompt_plus_completion_over_max_length_raises(tiny_model) -> None:
    from harness.batching import chat_prompt_ids
    from harness.methods import StageContext, train_stage
    from harness.tasks.spec import TEACHER_TEMPLATES, teacher_messages

    model, tok = tiny_model
    model = copy.deepcopy(model)
    items = [Item(prompt="Q?", demonstration="A.", source="f.jsonl:7")]
    n_teacher = len(chat_prompt_ids(tok, teacher_messages(items[0], TEACHER_TEMPLATES["paper"])))
    cfg = _cfg(max_new_tokens=8, skip_tokens=0)
    cfg.trainer.batch_size = 1
    cfg.model.max_length = n_teacher + 2  # a random 2-layer model essentially never emits EOS within 2 tokens
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"f.jsonl:7.*completion"):
        train_stage(model, tok, items, None, cfg, StageContext())


def test_unknown_method_lists_valid_names() -> None:
    from harness.methods import get_method, method_names

    assert {"dft", "opsd", "sdft", "sft", "sft_l2", "sft_replay"} <= set(method_names())
    with pytest.raises(ValueError, match=", ".join(method_names())):
        get_method("grpo")


# --- remedies (each off by default) ---------------------------------------------------------------------------


def _step(tiny_model, monkeypatch, completions, truncated, **distill):
    """A DistillStep whose rollouts are fixed token lists (so every setting sees the same completions)."""
    from harness.batching import pad
    from harness.distill.rollout import Rollouts
    from harness.distill.teacher import Teacher
    from harness.methods import sdft

    model, tok = tiny_model
    cfg = _cfg(max_new_tokens=6, **distill)
    step = sdft.DistillStep(
        model, tok, Teacher(model, "base"), cfg.method.distill, None, cfg.model.max_length
    )

    def fixed(students, teachers):
        p_ids, p_mask = pad(students, tok.pad_token_id, "left")
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Rollouts(p_ids, p_mask, c_ids, c_mask, torch.tensor(truncated)), torch.zeros(
            len(students), dtype=torch.bool
        )

    monkeypatch.setattr(step, "rollouts", fixed)
    return step


ITEMS2 = [
    Item(prompt="Hi there, who are you?", demonstration="A model."),
    Item(prompt="2+2?", demonstration="4"),
]
COMPLETIONS = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 2]]  # row 0 hit the cap, row 1 ended (EOS id 2)


def test_mask_clipped_trains_only_on_rows_that_ended(tiny_model, monkeypatch) -> None:
    from harness.batching import chat_prompt_ids, completion_hidden, join, pad
    from harness.tasks.spec import student_messages, teacher_messages

    model, tok = tiny_model
    plain = _step(tiny_model, monkeypatch, COMPLETIONS, [True, False])
    masked = _step(tiny_model, monkeypatch, COMPLETIONS, [True, False], mask_clipped=True)
    loss_plain, _ = plain(ITEMS2, ITEMS2)
    loss_masked, stats = masked(ITEMS2, ITEMS2)
    assert stats["masked_frac"] == 0.5 and stats["clipped_frac"] == 0.5
    # independent: the loss of row 1 alone, divided by the whole batch (2 rows)
    s = [chat_prompt_ids(tok, student_messages(ITEMS2[1]))]
    t = [chat_prompt_ids(tok, teacher_messages(ITEMS2[1], masked.template))]
    c_ids, c_mask = pad([COMPLETIONS[1]], tok.pad_token_id, "right")
    sb = join(*pad(s, tok.pad_token_id, "left"), c_ids, c_mask)
    tb = join(*pad(t, tok.pad_token_id, "left"), c_ids, c_mask)
    with torch.no_grad():
        ref, _ = distillation_loss(
            completion_hidden(model, sb),
            completion_hidden(model, tb),
            model.get_output_embeddings(),
            model.get_output_embeddings(),
            c_ids,
            c_mask,
            masked.settings,
            batch_total=2,
        )
    assert loss_masked.item() == pytest.approx(ref.item(), rel=5e-3)  # padded vs unpadded float32 forward
    assert loss_plain.item() > loss_masked.item() > 0
    all_clipped = _step(tiny_model, monkeypatch, COMPLETIONS, [True, True], mask_clipped=True)
    loss_none, _ = all_clipped(ITEMS2, ITEMS2)
    assert loss_none.item() == 0.0 and loss_none.requires_grad


def test_sft_anchor_adds_weighted_cross_entropy(tiny_model, monkeypatch) -> None:
    from harness.methods.sft import SupervisedStep

    model, tok = tiny_model
    base = _step(tiny_model, monkeypatch, COMPLETIONS, [True, False])
    anchored = _step(tiny_model, monkeypatch, COMPLETIONS, [True, False], sft_weight=0.5)
    loss0, _ = base(ITEMS2, ITEMS2)
    loss1, stats = anchored(ITEMS2, ITEMS2)
    ce, _ = SupervisedStep(model, tok, _cfg().method.sft.loss_chunk_size, _cfg().model.max_length)(
        ITEMS2, ITEMS2
    )
    assert loss1.item() == pytest.approx(loss0.item() + 0.5 * ce.item(), rel=1e-5)
    assert stats["sft_ce"] == pytest.approx(ce.item(), rel=1e-5)  # one micro-batch: its mean is the batch's


def test_sft_warmup_runs_supervised_steps_first(tiny_model, monkeypatch) -> None:
    from harness.methods.sft import SupervisedStep

    model, tok = tiny_model
    step = _step(tiny_model, monkeypatch, COMPLETIONS, [True, False], sft_warmup_steps=2)
    ce, _ = SupervisedStep(model, tok, _cfg().method.sft.loss_chunk_size, _cfg().model.max_length)(
        ITEMS2, ITEMS2
    )
    for _ in range(2):
        loss, stats = step(ITEMS2, ITEMS2)
        assert stats.get("sft_warmup") == 1.0 and "kl" not in stats
        assert loss.item() == pytest.approx(ce.item(), rel=1e-5)
        step.after_step()
    loss, stats = step(ITEMS2, ITEMS2)
    assert "kl" in stats and "sft_warmup" not in stats


@pytest.mark.parametrize(
    "source,share,expected",
    [("student", 0.5, 0.0), ("teacher", 0.5, 1.0), ("mix", 1.0, 1.0), ("mix", 0.0, 0.0)],
)
def test_rollout_source_picks_the_writer_and_its_context(
    tiny_model, monkeypatch, source, share, expected
) -> None:
    from harness.distill.teacher import Teacher
    from harness.methods import sdft
    from harness.tasks.spec import teacher_messages

    model, tok = tiny_model
    cfg = _cfg(max_new_tokens=4, rollout_source=source, teacher_share=share)
    teacher = Teacher(model, "base")
    step = sdft.DistillStep(model, tok, teacher, cfg.method.distill, None, cfg.model.max_length)
    calls = []
    real = sdft.sample

    def spy(m, t, prompts, **kw):
        calls.append((m, [list(p) for p in prompts]))
        return real(m, t, prompts, **kw)

    monkeypatch.setattr(sdft, "sample", spy)
    torch.manual_seed(0)
    _, stats = step(ITEMS2, ITEMS2)
    assert stats["teacher_rollout_frac"] == expected
    for writer, prompts in calls:
        from_teacher = writer is teacher.model
        assert from_teacher == (expected == 1.0)
        if from_teacher:  # the teacher writes under its own context (the demonstration in view)
            assert prompts == [chat_prompt_ids_(tok, teacher_messages(it, step.template)) for it in ITEMS2]


def chat_prompt_ids_(tok, messages):
    from harness.batching import chat_prompt_ids

    return chat_prompt_ids(tok, messages)


def test_short_rollouts_warn_naming_task_and_lengths(tiny_model, caplog) -> None:
    from harness.methods.sdft import check_rollout_length
    from harness.tasks.spec import load_train_items, resolve_task

    _, tok = tiny_model
    spec = resolve_task("tooluse")
    items = load_train_items(spec, 8)
    with caplog.at_level("WARNING"):
        message = check_rollout_length(tok, items, spec, _cfg(max_new_tokens=20).method.distill)
    assert (
        message
        and "task tooluse" in message
        and "max_new_tokens=20" in message
        and "of 8 demonstrations" in message
    )
    assert (
        check_rollout_length(tok, items, spec, _cfg(max_new_tokens=None).method.distill) is None
    )  # the task's 72 suffice
    with pytest.raises(ValueError, match="task tooluse"):
        check_rollout_length(tok, items, spec, _cfg(max_new_tokens=20, short_rollouts="error").method.distill)


def test_system_template_moves_the_demonstration_into_a_system_message() -> None:
    from harness.tasks.spec import resolve_template, teacher_messages

    item = Item(
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}],
        demonstration="A.",
    )
    msgs = teacher_messages(item, resolve_template("system"))
    assert msgs == [
        {"role": "system", "content": "Reference answer for the next question:\nA.\n\nBe brief."},
        {"role": "user", "content": "Q?"},
    ]
    assert teacher_messages(Item(prompt="Q?", demonstration="A."), resolve_template("label")) == [
        {"role": "user", "content": "Q?\n\nCorrect answer:\nA."}
    ]


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("rollout_source", "both", "rollout_source"),
        ("teacher_share", 1.5, "teacher_share"),
        ("sft_weight", -1.0, "sft_weight"),
        ("sample_temperature", 0.0, "sample_temperature"),
    ],
)
def test_bad_remedy_values_are_refused(key, value, match) -> None:
    from harness.run.validate import validate

    cfg = OmegaConf.structured(Config)
    cfg.stream.name, cfg.stream.tasks = "s", ["tooluse"]
    cfg.method.distill[key] = value
    with pytest.raises(ValueError, match=match):
        validate(cfg)
