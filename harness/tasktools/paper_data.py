"""Adapters for the skill-learning data of the SDFT paper (Shenfeld et al., arXiv 2601.19897, Table 5).

Each adapter reads its source through `harness.tasktools.sources.load_source` (so `datasets`, from local files or
the hub) and returns mapped rows plus the defaults that suit them; `harness tasks new NAME --adapter X`
writes the task folder. Nothing is downloaded at import time.

| adapter | data | where it comes from | scorer |
|---|---|---|---|
| `sdft_tooluse` | ToolAlpaca tool use, as shipped by the SDFT repository | your copy of `data/tooluse_data/{train_data,eval_data}.json` | `react` |
| `sdft_science` | SciKnowEval chemistry with the repository's worked demonstrations | your copy of `data/science_data/{train_data,eval_data}` (save_to_disk folders) | `regex` on `<answer>` |
| `sciknoweval` | SciKnowEval chemistry, level L3, multiple choice | hub `hicai-zju/SciKnowEval` (split `test`) | `choice` |
| `medical_o1` | HuatuoGPT-o1 medical reasoning (English) | hub `FreedomIntelligence/medical-o1-reasoning-SFT` (config `en`) + `.../medical-o1-verifiable-problem` | `contains` |

What differs from the paper is said in each adapter's description (it lands in the task's README).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from typing import Any

from harness.scorers import extract_actions, load_structured
from harness.tasktools.sources import (
    BuildError,
    Built,
    as_text,
    flatten_prompt,
    lettered,
    load_source,
    pick_split,
)

SCIKNOWEVAL_ID = "hicai-zju/SciKnowEval"
MEDICAL_SFT_ID = "FreedomIntelligence/medical-o1-reasoning-SFT"
MEDICAL_EVAL_ID = "FreedomIntelligence/medical-o1-verifiable-problem"
SCIENCE_INSTRUCTION = "Give your final answer as the option letter inside <answer></answer> tags."
ANSWER_TAG = r"<answer>\s*(.*?)\s*</answer>"


def _require(value: str | None, flag: str, what: str) -> str:
    if not value:
        raise BuildError(f"{flag} is required for this adapter: {what}")
    return value


# --- tool use (ToolAlpaca, from the SDFT repository) -----------------------------------------------------


def tooluse_gold(golden_answer: Any) -> list[dict]:
    """`golden_answer` (a list of {Action, Action_Input}, or that list as JSON / Python-literal text) as a
    list of actions with decoded inputs."""
    actions = load_structured(golden_answer)
    if isinstance(actions, dict):
        actions = [actions]
    if not isinstance(actions, list) or not all(isinstance(a, dict) and "Action" in a for a in actions):
        raise BuildError(
            f"golden_answer {str(golden_answer)[:120]!r} is not a list of {{Action, Action_Input}}"
        )
    gold = []
    for a in actions:
        value = load_structured(a.get("Action_Input", {}))
        gold.append(
            {"Action": str(a["Action"]).strip(), "Action_Input": {} if value in ("", None) else value}
        )
    return gold


def render_actions(actions: list[dict]) -> str:
    """Gold actions in ToolAlpaca's text format: the eval items' demonstration (what the scorer accepts)."""
    lines = []
    for a in actions:
        value = a["Action_Input"]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines += [f"Action: {a['Action']}", f"Action Input: {text}"]
    return "\n".join(lines)


def tooluse_rows(train_rows: list[dict], eval_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Train: prompt + golden_response (lines joined). Eval: prompt + the gold actions as `answer` (JSON)."""
    train = []
    for row in train_rows:
        for key in ("prompt", "golden_response"):
            if key not in row:
                raise BuildError(f"tool-use train row without {key!r}; columns: {', '.join(row)}")
        train.append(
            {"prompt": as_text(row["prompt"]), "demonstration": as_text(row["golden_response"]).strip()}
        )
    evals = []
    for row in eval_rows:
        for key in ("prompt", "golden_answer"):
            if key not in row:
                raise BuildError(f"tool-use eval row without {key!r}; columns: {', '.join(row)}")
        gold = tooluse_gold(row["golden_answer"])
        item = {
            "prompt": as_text(row["prompt"]),
            "demonstration": render_actions(gold),
            "answer": json.dumps(gold, ensure_ascii=False),
        }
        for extra in ("name", "instruction"):  # kept for reading samples; the scorer does not use them
            if row.get(extra) is not None:
                item[f"tool_{extra}"] = as_text(row[extra])
        evals.append(item)
    return train, evals


def sdft_tooluse(args: argparse.Namespace) -> Built:
    what = "the SDFT repository's data/tooluse_data/train_data.json (--from) and eval_data.json (--eval-from)"
    train_src = _require(args.source, "--from", what)
    eval_src = _require(args.eval_source, "--eval-from", what)
    _, train_rows = pick_split(load_source(train_src), None, train_src)
    _, eval_rows = pick_split(load_source(eval_src), None, eval_src)
    train, evals = tooluse_rows(train_rows, eval_rows)
    # a gold the scorer cannot read back would make every answer wrong: fail while building, not at eval
    for item in evals:
        if extract_actions(item["demonstration"]) is None:
            raise BuildError(
                f"tool-use eval item {item['prompt'][:60]!r}: gold actions do not render parsably"
            )
    return Built(
        train=train,
        eval=evals,
        scorer="react",
        teacher_template="paper",
        source_lines=[
            f"train: `{train_src}` ({len(train_rows)} rows): prompt <- `prompt`, demonstration <- "
            "`golden_response` (lines joined)",
            f"eval: `{eval_src}` ({len(eval_rows)} rows): prompt <- `prompt`, answer <- `golden_answer` "
            "(list of {Action, Action_Input}), demonstration <- the gold actions as "
            "'Action: ...' / 'Action Input: ...' lines",
        ],
        description="Tool use (ToolAlpaca) as in the SDFT paper: call the described API in the 'Action: / "
        "Action Input:' format; scored by the exact actions and inputs, in order (react scorer).",
    )


# --- science Q&A (SciKnowEval chemistry) -----------------------------------------------------------------


def _level(row: dict) -> str:
    details = row.get("details")
    if isinstance(details, str):
        details = load_structured(details)
    return str(details.get("level", "")) if isinstance(details, dict) else ""


def sciknoweval_rows(rows: list[dict], domain: str = "Chemistry", level: str = "L3") -> list[dict]:
    """Multiple-choice rows of one domain and level: prompt = instructions + question + lettered options,
    demonstration = `<answer>X</answer>`, answer = X."""
    out = []
    for row in rows:
        if row.get("domain") != domain or _level(row) != level:
            continue
        choices, key = row.get("choices"), str(row.get("answerKey") or "").strip()
        if not choices or len(key) != 1:  # not multiple choice (e.g. open or true/false items)
            continue
        header = row.get("prompt")
        if isinstance(header, dict):
            header = header.get("default", "")
        parts = [
            as_text(header).strip(),
            f"Question: {as_text(row.get('question')).strip()}",
            lettered(choices),
            SCIENCE_INSTRUCTION,
        ]
        out.append(
            {
                "prompt": "\n\n".join(p for p in parts if p),
                "demonstration": f"<answer>{key}</answer>",
                "answer": key,
            }
        )
    return out


def sciknoweval(args: argparse.Namespace) -> Built:
    source = args.source or SCIKNOWEVAL_ID
    split = args.split or "test"  # SciKnowEval publishes its items as one test split
    _, rows = pick_split(load_source(source, args.config, split), split, source)
    items = sciknoweval_rows(rows)
    if not items:
        raise BuildError(
            f"{source}: no Chemistry L3 multiple-choice rows (columns: {', '.join(rows[0]) if rows else 'none'})"
        )
    return Built(
        train=items,
        eval=None,
        scorer="choice",
        teacher_template="paper",
        source_lines=[
            f"source: `{source}`, split `{split}`: {len(items)} of {len(rows)} rows are Chemistry, "
            "level L3, multiple choice",
            "mapping: prompt <- `prompt.default` + `question` + lettered `choices` + an answer-format "
            "line; demonstration <- `<answer>{answerKey}</answer>`; answer <- `answerKey`",
        ],
        description="Science Q&A (SciKnowEval chemistry, level L3) as in the SDFT paper, multiple choice. "
        "The paper's demonstrations were worked solutions generated by a stronger model; the hub "
        "data has only the answer key, so demonstrations here are the bare `<answer>X</answer>` "
        "(use --adapter sdft_science with the SDFT repository's data for the paper's demonstrations).",
    )


def sdft_science(args: argparse.Namespace) -> Built:
    what = "the SDFT repository's data/science_data/train_data (--from) and eval_data (--eval-from) folders"
    train_src = _require(args.source, "--from", what)
    eval_src = _require(args.eval_source, "--eval-from", what)
    _, train_rows = pick_split(load_source(train_src), None, train_src)
    _, eval_rows = pick_split(load_source(eval_src), None, eval_src)
    train = [
        {
            "prompt": flatten_prompt(r.get("messages") or r.get("prompt")),
            "demonstration": as_text(r.get("output_text")).strip(),
        }
        for r in train_rows
    ]
    evals = [
        {
            "prompt": flatten_prompt(r["prompt"]),
            "demonstration": f"<answer>{as_text(r['answer']).strip()}</answer>",
            "answer": as_text(r["answer"]).strip(),
        }
        for r in eval_rows
    ]
    return Built(
        train=train,
        eval=evals,
        scorer="regex",
        scorer_options={"pattern": ANSWER_TAG, "flags": "s"},
        teacher_template="paper",
        source_lines=[
            f"train: `{train_src}` ({len(train_rows)} rows): prompt <- `messages` (system + user, "
            "flattened), demonstration <- `output_text`",
            f"eval: `{eval_src}` ({len(eval_rows)} rows): prompt <- `prompt`, answer <- `answer`",
        ],
        description="Science Q&A (SciKnowEval chemistry) with the SDFT repository's worked demonstrations; "
        "scored on the text of the last <answer> tag (regex scorer), as the repository scores it.",
    )


# --- medical (HuatuoGPT-o1) ------------------------------------------------------------------------------


def medical_rows(train_rows: list[dict], eval_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Train: Question -> Response. Eval: the verifiable question, its ground-truth answer as `answer`."""
    train = [
        {"prompt": as_text(r["Question"]), "demonstration": as_text(r["Response"]).strip()}
        for r in train_rows
    ]
    evals = []
    for r in eval_rows:
        answer = as_text(r["Ground-True Answer"]).strip()
        evals.append(
            {
                "prompt": as_text(r["Open-ended Verifiable Question"]),
                "demonstration": answer,
                "answer": answer,
            }
        )
    return train, evals


def medical_o1(args: argparse.Namespace) -> Built:
    train_src = args.source or MEDICAL_SFT_ID
    eval_src = args.eval_source or MEDICAL_EVAL_ID
    config = args.config or ("en" if train_src == MEDICAL_SFT_ID else None)
    _, train_rows = pick_split(
        load_source(train_src, config, args.split or "train"), args.split or "train", train_src
    )
    _, eval_rows = pick_split(
        load_source(eval_src, args.eval_config, args.eval_split or "train"),
        args.eval_split or "train",
        eval_src,
    )
    for rows, cols, src in (
        (train_rows, ("Question", "Response"), train_src),
        (eval_rows, ("Open-ended Verifiable Question", "Ground-True Answer"), eval_src),
    ):
        missing = [c for c in cols if rows and c not in rows[0]]
        if missing:
            raise BuildError(f"{src}: missing column(s) {missing}; columns: {', '.join(rows[0])}")
    train, evals = medical_rows(train_rows, eval_rows)
    # a seeded sample of eval questions (the paper sampled its eval set at random), so --eval-limit
    # does not always take the head of the file
    random.Random(args.seed).shuffle(evals)
    return Built(
        train=train,
        eval=evals,
        scorer="contains",
        teacher_template="paper",
        source_lines=[
            f"train: `{train_src}` (config {config}) ({len(train_rows)} rows): prompt <- `Question`, "
            "demonstration <- `Response`",
            f"eval: `{eval_src}` ({len(eval_rows)} rows, seeded shuffle, seed {args.seed}): prompt <- "
            "`Open-ended Verifiable Question`, answer and demonstration <- `Ground-True Answer`",
        ],
        description="Medical reasoning (HuatuoGPT-o1, English) as in the SDFT paper. The paper graded answers "
        "with an LLM judge; here the `contains` scorer asks for the ground-truth answer as a phrase "
        "in the response, an offline stand-in that misses paraphrases (scores are not comparable "
        "to the paper's).",
    )


ADAPTERS: dict[str, Callable[[argparse.Namespace], Built]] = {
    "sdft_tooluse": sdft_tooluse,
    "sdft_science": sdft_science,
    "sciknoweval": sciknoweval,
    "medical_o1": medical_o1,
}
