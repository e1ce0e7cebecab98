"""Why CREDIT made every caps rollout run to the length cap: how the contrastive baseline moves the end of
the answer.

For the first N caps train items, the completion is the item's own demonstration followed by the end-of-turn
token. At each completion position the script compares the plain teacher (the model with this item's
demonstration in context) with the CREDIT target (teacher log-probs minus `weight` x the mean log-probs under
K other items' teacher contexts, renormalised; harness.distill.credit.contrastive_teacher), and prints the
mean probability of the demonstration's next token for answer tokens and for the closing token.

    PYTHONPATH=$PWD nice -n 5 python results/family/credit_eos.py [N] [K] [WEIGHT]
"""

from __future__ import annotations

import random
import sys

import torch

from harness.batching import chat_prompt_ids
from harness.cli import compose
from harness.distill.credit import contrastive_teacher
from harness.models import load_model
from harness.tasks.spec import load_train_items, resolve_task, resolve_template, teacher_messages


def completion_logits(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Logits predicting each completion token, given the prompt and the completion before it."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)].float()


def main() -> None:
    n, k, weight = (int(sys.argv[1]) if len(sys.argv) > 1 else 24), 2, 0.5
    if len(sys.argv) > 2:
        k = int(sys.argv[2])
    if len(sys.argv) > 3:
        weight = float(sys.argv[3])
    torch.set_num_threads(1)
    cfg = compose(["experiment=budget", "method=sdft"])
    model, tok = load_model(cfg.model)
    model.eval()
    spec = resolve_task("caps")
    template = resolve_template(cfg.method.distill.template, spec)
    items = load_train_items(spec)[: n + k]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(0)
    answer_plain, answer_credit, end_plain, end_credit = [], [], [], []
    for i, item in enumerate(items[:n]):
        completion = tok(item.demonstration, add_special_tokens=False)["input_ids"] + [end]
        own = completion_logits(model, chat_prompt_ids(tok, teacher_messages(item, template)), completion)
        others = rng.sample([j for j in range(len(items)) if j != i], k)
        baselines = [
            completion_logits(model, chat_prompt_ids(tok, teacher_messages(items[j], template)), completion)
            for j in others
        ]
        plain = torch.softmax(own, -1)
        credit = torch.softmax(contrastive_teacher(own, baselines, weight), -1)
        target = torch.tensor(completion)
        p_plain = plain.gather(-1, target[:, None]).squeeze(-1)
        p_credit = credit.gather(-1, target[:, None]).squeeze(-1)
        answer_plain += p_plain[:-1].tolist()
        answer_credit += p_credit[:-1].tolist()
        end_plain.append(float(p_plain[-1]))
        end_credit.append(float(p_credit[-1]))

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    print(
        f"caps, {n} train items, K={k} other contexts, weight {weight}, teacher template {template[:40]!r}..."
    )
    print("| token | plain teacher p(demonstration token) | CREDIT target p | n |")
    print("|---|---|---|---|")
    print(f"| answer tokens | {mean(answer_plain):.3f} | {mean(answer_credit):.3f} | {len(answer_plain)} |")
    print(f"| closing <|im_end|> | {mean(end_plain):.3f} | {mean(end_credit):.3f} | {len(end_plain)} |")


if __name__ == "__main__":
    main()
