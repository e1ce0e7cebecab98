"""Score a model's greedy answers with a task folder's own scorer: the base score and the in-context score.

The in-context score (the model with the item's demonstration in its context, rendered by the teacher
template) is the SDFT teacher's ceiling: SDFT cannot teach what its teacher cannot do (docs/design.md §11).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import yaml

from harness.decoding import packed
from harness.decoding.choose import pick
from harness.decoding.static import decode
from harness.decoding.warpers import StopStrings, declared_eos
from harness.models import autocast
from harness.parallel import shares
from harness.tasks.spec import Item, TaskSpec, resolve_template, student_messages, teacher_messages

# greedy_scores cuts a response where the task's lm-eval YAML `until` does, so both paths score the same
# text; a folder whose YAML names no `until` gets lm-eval's own default, a blank line. (Generation also
# stops at the EOS token, which is removed from the decoded text.)
STOP_STRINGS = ("\n\n",)

Scorer = Callable[[str, dict], float]


def load_scorer(spec: TaskSpec) -> Scorer:
    """`score(response, doc)` from the task folder's utils.py, imported by path (folders are not packages)."""
    path = spec.path / "utils.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: a task folder needs utils.py with score(response, doc) -> float")
    module_name = f"harness_task_utils_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "score", None)):
        raise AttributeError(f"{path}: no function score(response, doc)")
    return module.score


def scorer_problems(spec: TaskSpec, rows: Sequence[dict]) -> list[str]:
    """The task's scorer gives 1.0 to every row's own demonstration; rows carry `_where` (file:line).

    A scorer that raises or rejects a correct answer would make every evaluation of the task meaningless,
    so `harness run` checks this before the model loads and `harness tasks validate` reports it."""
    try:
        scorer = load_scorer(spec)
    except Exception as err:  # the user's utils.py: any error means it cannot be used
        return [f"{spec.path / 'utils.py'}: cannot load score(): {type(err).__name__}: {err}"]
    problems = []
    for row in rows:
        if "demonstration" not in row:
            continue  # an eval line without a demonstration has nothing to check the scorer against
        doc = {k: v for k, v in row.items() if k != "_where"}
        try:
            value = scorer(row["demonstration"], doc)
        except Exception as err:  # the user's scorer: report what it raised, with the line
            problems.append(f"{row['_where']}: score(demonstration, doc) raised {type(err).__name__}: {err}")
            continue
        if value != 1.0:
            problems.append(f"{row['_where']}: score(demonstration, doc) = {value}, expected 1.0")
    return problems


class _LmEvalYamlLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs without importing their `!function` helpers."""


_LmEvalYamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def lm_eval_task_config(spec: TaskSpec, task_name: str | None = None) -> dict:
    """The lm-eval YAML in the task folder that defines `task_name` (default: eval_tasks[0]); {} if none."""
    wanted = task_name or (spec.eval_tasks[0] if spec.eval_tasks else spec.name)
    for path in sorted(spec.path.glob("*.yaml")):
        if path.name == "task.yaml":
            continue
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_LmEvalYamlLoader) or {}
        if isinstance(config, dict) and config.get("task") == wanted:
            return config
    return {}


def task_stop_strings(spec: TaskSpec) -> tuple[str, ...]:
    until = (lm_eval_task_config(spec).get("generation_kwargs") or {}).get("until")
    if isinstance(until, str):
        return (until,)
    return tuple(until) if until else STOP_STRINGS


def cut_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    cut = len(text)
    for stop in stops:
        pos = text.find(stop)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]


def doc_to_item(doc: dict) -> Item:
    return Item(
        prompt=doc["prompt"],
        demonstration=doc.get("demonstration", ""),
        privileged=doc.get("privileged"),
        id=doc.get("id"),
    )


# (rank, world): which contiguous block of the greedy batches this process decodes (harness.parallel.shares)
Share = tuple[int, int]
WHOLE: Share = (0, 1)


def greedy_generate(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 16,
    stops: Sequence[str] = STOP_STRINGS,
    decoder: str = "hf",
) -> list[str]:
    """Greedy completions of chat conversations, batched and left-padded, cut at the stop strings.

    `decoder`: "static" (harness.decoding, the same tokens as `generate`; falls back to it where it cannot
    run) or "hf" (Hugging Face `generate`).
    """
    out = greedy_generate_share(model, tokenizer, conversations, max_new_tokens, batch_size, stops, decoder)
    return [out[i] for i in range(len(conversations))]


def greedy_batches(tokenizer: Any, texts: list[str], batch_size: int) -> list[list[int]]:
    """The positions of `texts` batch by batch: similar lengths together (longest first), so short prompts
    are not padded to long ones. Every process computes the same batches from the same texts."""
    order = sorted(
        range(len(texts)), key=lambda i: -len(tokenizer(texts[i], add_special_tokens=False)["input_ids"])
    )
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def greedy_generate_share(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 16,
    stops: Sequence[str] = STOP_STRINGS,
    decoder: str = "hf",
    share: Share = WHOLE,
) -> dict[int, str]:
    """`greedy_generate` of this process's block of the batches only, keyed by conversation position.

    Whole batches are shared, never single items: a batch's padding and shapes change the floating-point
    path, so an item decoded in another batch could come out differently from one process's answer."""
    if tokenizer.padding_side != "left":
        raise ValueError("greedy_generate needs a left-padded tokenizer (harness.models.prepare_tokenizer)")

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
    ]
    out: dict[int, str] = {}
    static = pick(model, decoder)[0] == "static"
    try:
        # the model's compute dtype (harness.models.Precision); one weight pack for every batch
        with autocast(model), packed.reusing_pack(model):
            for index in shares.share(greedy_batches(tokenizer, texts, batch_size), *share):
                enc = tokenizer(
                    [texts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                if static:
                    new_tokens = decode(
                        model,
                        enc["input_ids"],
                        enc["attention_mask"],
                        max_new_tokens=max_new_tokens,
                        eos=declared_eos(model, tokenizer),
                        pad_id=tokenizer.pad_token_id,
                        stop_strings=StopStrings(tokenizer, stops),
                    )
                else:
                    new_tokens = _generate(model, tokenizer, enc, max_new_tokens, stops)
                for i, text in zip(
                    index, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
                ):
                    out[i] = cut_at_stop(text, stops)
    finally:
        model.train(was_training)
    return out


def _generate(
    model: Any, tokenizer: Any, enc: Any, max_new_tokens: int, stops: Sequence[str]
) -> torch.Tensor:
    """Hugging Face `generate`'s greedy new tokens; a row ends at a stop string (its stop_strings), the
    batch when every row has."""
    generated = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        **({"stop_strings": list(stops), "tokenizer": tokenizer} if stops else {}),
    )
    return generated[:, enc["input_ids"].shape[1] :]


def greedy_responses(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    docs: list[dict],
    mode: str,
    template: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    decoder: str = "hf",
) -> list[str]:
    """The greedy responses behind greedy_scores (useful to inspect what the model wrote)."""
    out = _responses_share(model, tokenizer, spec, docs, mode, template, max_new_tokens, batch_size, decoder)
    return [out[i] for i in range(len(docs))]


def _responses_share(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    docs: list[dict],
    mode: str,
    template: str | None,
    max_new_tokens: int | None,
    batch_size: int,
    decoder: str,
    share: Share = WHOLE,
) -> dict[int, str]:
    if mode == "base":
        conversations = [student_messages(doc_to_item(d)) for d in docs]
    elif mode == "in_context":
        chosen = resolve_template(template, spec)
        conversations = [teacher_messages(doc_to_item(d), chosen) for d in docs]
    else:
        raise ValueError(f"mode must be 'base' or 'in_context', got {mode!r}")
    limit = max_new_tokens or spec.eval_max_gen_toks or spec.max_new_tokens or 256
    stops = task_stop_strings(spec)
    return greedy_generate_share(model, tokenizer, conversations, limit, batch_size, stops, decoder, share)


def greedy_scores(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    docs: list[dict],
    mode: str,
    template: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    decoder: str = "hf",
) -> list[float]:
    """Per-doc scores of greedy answers: mode "base" = the prompt alone (the student), "in_context" = the
    teacher prompt with the item's own demonstration (and privileged context), i.e. the SDFT teacher."""
    out = greedy_scores_share(
        model, tokenizer, spec, docs, mode, template, max_new_tokens, batch_size, decoder
    )
    return [out[i] for i in range(len(docs))]


def greedy_scores_share(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    docs: list[dict],
    mode: str,
    template: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    decoder: str = "hf",
    share: Share = WHOLE,
) -> dict[int, float]:
    """`greedy_scores` of this process's block of the batches, keyed by doc position
    (harness.parallel.shares.merge_indexed puts the processes' parts back together)."""
    responses = _responses_share(
        model, tokenizer, spec, docs, mode, template, max_new_tokens, batch_size, decoder, share
    )
    scorer = load_scorer(spec)
    return {i: float(scorer(text, docs[i])) for i, text in responses.items()}
