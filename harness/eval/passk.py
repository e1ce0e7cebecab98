"""pass@k on a stream task: `eval.samples` sampled answers per eval item, scored by the task's own scorer,
turned into pass@k by the unbiased estimator of Chen et al. 2021 (the HumanEval paper).

With n samples of which c are correct, pass@k = E[at least one of k answers drawn without replacement from
the n is correct] = 1 - C(n - c, k) / C(n, k), averaged over items. Drawing n >= k samples once and using
this estimate has lower variance than drawing k samples and checking them (the naive estimate). The product
form below avoids the huge binomial coefficients.

Sampling draws from its own seeded RNG state (`torch.random.fork_rng`), so turning pass@k on changes
neither the training that follows nor any other evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from harness.eval.scoring import cut_at_stop, doc_to_item, load_scorer, task_stop_strings
from harness.models import autocast
from harness.tasks.spec import TaskSpec, student_messages


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
        miss *= 1.0 - k / i
    return 1.0 - miss


def check_pass_k(ks: Sequence[int], samples: int) -> None:
    """One line naming the bad setting: every k in 1..samples."""
    bad = [k for k in ks if not 1 <= k <= samples]
    if bad:
        raise ValueError(f"eval.pass_k={list(ks)}: each k must be in 1..eval.samples={samples}, not {bad[0]}")


@torch.no_grad()
def sample_responses(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    samples: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    stops: Sequence[str] = (),
) -> list[list[str]]:
    """`samples` sampled completions per conversation (one prompt at a time, its samples in one batch)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[str]] = []
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), autocast(model):
            torch.manual_seed(seed)
            for conversation in conversations:
                text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
                enc = tokenizer([text], return_tensors="pt", add_special_tokens=False).to(device)
                generated = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_p=1.0,
                    top_k=0,
                    num_return_sequences=samples,
                    pad_token_id=tokenizer.pad_token_id,
                    **({"stop_strings": list(stops), "tokenizer": tokenizer} if stops else {}),
                )
                new = tokenizer.batch_decode(
                    generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
                )
                out.append([cut_at_stop(t, stops) for t in new])
    finally:
        model.train(was_training)
    return out


def eval_docs(spec: TaskSpec, limit: int | None) -> list[dict]:
    lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()]
    return docs[:limit] if limit else docs


def pass_k_scores(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    docs: list[dict],
    ks: Sequence[int],
    samples: int,
    temperature: float,
    seed: int,
    max_new_tokens: int | None = None,
) -> dict[int, float]:
    """{k: mean over docs of pass@k} for the task `spec`, from `samples` sampled answers per doc."""
    check_pass_k(ks, samples)
    limit = max_new_tokens or spec.eval_max_gen_toks or spec.max_new_tokens or 256
    conversations = [student_messages(doc_to_item(d)) for d in docs]
    answers = sample_responses(
        model, tokenizer, conversations, samples, limit, temperature, seed, task_stop_strings(spec)
    )
    scorer = load_scorer(spec)
    correct = [sum(float(scorer(a, d)) >= 1.0 for a in texts) for texts, d in zip(answers, docs, strict=True)]
    return {k: sum(pass_at_k(samples, c, k) for c in correct) / max(len(correct), 1) for k in ks}


def pass_k_metrics(model: Any, tokenizer: Any, specs: Sequence[TaskSpec], eval_cfg: Any, seed: int) -> dict:
    """The stage's `pass_at_<k>/<task>` metrics for every stream task (empty when `eval.pass_k` is empty)."""
    if not eval_cfg.pass_k:
        return {}
    metrics: dict[str, float] = {}
    for spec in specs:
        docs = eval_docs(spec, eval_cfg.limit)
        scores = pass_k_scores(
            model, tokenizer, spec, docs, eval_cfg.pass_k, eval_cfg.samples, eval_cfg.pass_temperature, seed
        )
        metrics.update({f"pass_at_{k}/{spec.name}": value for k, value in scores.items()})
    return metrics
