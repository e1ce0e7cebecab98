"""What the reward-using members of the distillation family share: every rollout judged by the task's own
strict scorer (`score(response, doc)` from the task folder's utils.py, harness.eval.scoring).

The scorer needs the item's whole JSONL line (e.g. `answer`), which `Item` does not carry: the line is read
back from the item's `source` ("path:line", as harness.tasks.spec.read_jsonl records it). A response is cut
at the task's stop strings before scoring, exactly as evaluation cuts it, so a rollout is judged as the
same text would be at evaluation time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from harness.batching import item_name
from harness.config import DistillConfig
from harness.distill.rollout import Rollouts
from harness.eval.scoring import cut_at_stop, load_scorer, task_stop_strings
from harness.methods.sdft import DistillStep
from harness.tasks.spec import Item, TaskSpec


class TrainDocs:
    """The raw JSON object behind each train item, read back from its file:line (cached per file)."""

    def __init__(self) -> None:
        self._lines: dict[Path, list[bytes]] = {}

    def __call__(self, item: Item) -> dict[str, Any]:
        path, _, line = item.source.rpartition(":")
        if not path or not line.isdigit():
            raise ValueError(
                f"item {item_name(item)}: the task's scorer needs the item's JSONL line, but the item "
                "does not say where it came from (source 'file:line'); load items with read_jsonl"
            )
        file = Path(path)
        if file not in self._lines:
            self._lines[file] = file.read_bytes().split(b"\n")  # read_jsonl's own line numbering
        return json.loads(self._lines[file][int(line) - 1].decode("utf-8"))


class ScoredStep(DistillStep):
    """A DistillStep whose rollouts are scored by the task before the teacher sees them. Subclasses say
    what the rewards do in `use_rewards` (teacher contexts, advantages)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        teacher: Any,
        d: DistillConfig,
        spec: TaskSpec | None,
        max_length: int,
    ) -> None:
        super().__init__(model, tokenizer, teacher, d, spec, max_length)
        if spec is None:
            raise ValueError("this method judges rollouts with the task's scorer: it needs a task folder")
        if d.rollout_source != "student":
            raise ValueError(
                f"method.distill.rollout_source={d.rollout_source}: a scored method distils the student's "
                "own judged rollouts; use rollout_source=student"
            )
        self.scorer, self.stops, self.docs = load_scorer(spec), task_stop_strings(spec), TrainDocs()

    def rewards(self, rows: list[Item], texts: list[str]) -> torch.Tensor:
        """The task's score of every row's completion, as evaluation would score that text."""
        return torch.tensor(
            [
                float(self.scorer(cut_at_stop(t, self.stops), self.docs(it)))
                for it, t in zip(rows, texts, strict=True)
            ]
        )

    def judge(
        self, rows: list[Item], out: Rollouts, teachers: list[list[int]]
    ) -> tuple[list[list[int]], torch.Tensor | None, dict[str, float]]:
        texts, _ = self.decode(out)
        rewards = self.rewards(rows, texts)
        teachers, advantages, stats = self.use_rewards(rows, texts, rewards, teachers)
        return teachers, advantages, {"reward": float(rewards.mean()), **stats}

    def use_rewards(
        self, rows: list[Item], texts: list[str], rewards: torch.Tensor, teachers: list[list[int]]
    ) -> tuple[list[list[int]], torch.Tensor | None, dict[str, float]]:
        raise NotImplementedError
