"""Scorer library for task folders: strict, documented answer checks that a task's utils.py can share.

Every scorer has the signature `scorer(response: str, gold: Any, **options) -> float` and returns 1.0 (the
response is correct) or 0.0. `gold` is what the eval line's `answer` field holds; structured golds (a JSON
call, a list of tool actions, a list of accepted answers) may come as JSON strings, because lm-eval's
`Dataset.from_list` would otherwise unify nested objects across rows (and add `None` keys to them).

| name | accepts | rejects |
|---|---|---|
| `exact` | the response equal to the gold (or one of a list of golds) after normalisation | any other text around it |
| `contains` | the normalised gold as a whole phrase anywhere in the response | the gold inside a longer word/number |
| `numeric` | the last number in the response within a tolerance of the gold number | no number; a number outside the tolerance |
| `choice` | the option letter given in an `<answer>` tag, "answer is X", or alone | no letter, a letter outside the options |
| `json_call` | the first JSON object with a "name" key, with the gold name and exactly the gold arguments | wrong name, a missing/extra/different argument |
| `react` | the "Action: / Action Input:" pairs, in order, equal to the gold list | a wrong action, different input, fewer/more actions |
| `regex` | the (last) match of a pattern equal to the gold after normalisation | no match; another value |

`make_scorer(name, **options)` returns `score(response, doc)` reading the gold from `doc["answer"]`; a
generated task's utils.py is built on it (harness.tasktools.builder).
"""

from __future__ import annotations

import ast
import json
import re
import string
from collections.abc import Callable
from typing import Any

Scorer = Callable[..., float]

# --- normalisation ---------------------------------------------------------------------------------------

_EDGE_PUNCT = string.punctuation + "“”‘’«»"


def normalize(text: Any) -> str:
    """Case-folded, whitespace collapsed, punctuation and quotes stripped from both ends.

    "  The Answer: Paris. " and "the answer: paris" normalise alike; inner punctuation stays ("3.5", "e-mail").
    """
    return " ".join(str(text).casefold().split()).strip(_EDGE_PUNCT + " ")


def _golds(gold: Any) -> list[str]:
    """A gold answer as a list of accepted strings: a list, a JSON list in a string, or one string."""
    if isinstance(gold, str):
        stripped = gold.strip()
        if stripped.startswith("["):
            try:
                decoded = json.loads(stripped)
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, list):
                return [str(g) for g in decoded]
        return [gold]
    if isinstance(gold, (list, tuple)):
        return [str(g) for g in gold]
    return [str(gold)]


# --- exact / contains ------------------------------------------------------------------------------------


def exact(response: str, gold: Any) -> float:
    """The whole response equals the gold after `normalize` (case, outer whitespace/punctuation ignored).

    Accepts "Paris." for "paris"; any one of several golds when gold is a list. Rejects "It is Paris"
    (extra words: use `contains` or `regex` for that) and an empty response.
    """
    got = normalize(response)
    return float(bool(got) and any(got == normalize(g) for g in _golds(gold) if normalize(g)))


def contains(response: str, gold: Any) -> float:
    """The normalised gold appears in the normalised response as a whole phrase.

    Accepts "The capital is Paris, of course" for "Paris". Rejects the gold inside a longer token
    ("12" in "123", "cat" in "category") and an empty gold (which would match everything).
    """
    text = " ".join(str(response).casefold().split())
    for g in _golds(gold):
        phrase = normalize(g)
        if phrase and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text):
            return 1.0
    return 0.0


# --- numbers ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])[-+]?\.\d+"
)


def parse_number(text: Any) -> float | None:
    """The number a gold field holds ("2,500", "-3.5e2", 4); None when it is not a number."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    match = _NUMBER.search(str(text))
    return float(match.group(0).replace(",", "")) if match else None


def numeric(response: str, gold: Any, rel_tol: float = 0.01, abs_tol: float = 0.0) -> float:
    """The last number in the response is within tolerance of the gold: |x - g| <= max(rel_tol*|g|, abs_tol).

    Accepts thousands separators ("2,500"), a unit after the number ("54 g"), scientific notation, and the
    worked solution before the final number. Rejects a response with no number, a last number outside the
    tolerance (earlier right numbers do not count), and a gold that is not a number (ValueError).
    """
    target = parse_number(gold)
    if target is None:
        raise ValueError(f"numeric scorer: gold {gold!r} is not a number")
    found = _NUMBER.findall(str(response))
    if not found:
        return 0.0
    value = float(found[-1].replace(",", ""))
    return float(abs(value - target) <= max(rel_tol * abs(target), abs_tol))


# --- multiple-choice letter ------------------------------------------------------------------------------


def extract_choice(response: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The option letter a response commits to, or None.

    In order: the last `<answer>X</answer>` tag; the last "answer is X" / "answer: X" / "Answer X"; a
    response that is only the letter, optionally in parentheses and followed by "." or ")" and the option's
    text ("B", "(B)", "B. Paris"). A letter merely mentioned in prose ("A and B are wrong") is not an answer.
    """
    text = str(response)
    allowed = re.escape(letters)
    tags = re.findall(rf"<answer>\s*\(?([{allowed}])\)?\s*[.):]?\s*(?:[^<]*)</answer>", text, re.IGNORECASE)
    if tags:
        return tags[-1].upper()
    said = re.findall(rf"answer\s*(?:is|:)?\s*[:\-]?\s*\(?([{allowed}])\b\)?", text, re.IGNORECASE)
    if said:
        return said[-1].upper()
    alone = re.fullmatch(rf"\s*\(?([{allowed}])\)?(?:[.):]\s*.*)?\s*", text, re.IGNORECASE | re.DOTALL)
    if alone:
        return alone.group(1).upper()
    return None


def choice(response: str, gold: Any, letters: str = "ABCDEFGHIJ") -> float:
    """The option letter (see `extract_choice`) equals the gold letter (case-insensitive).

    Accepts "<answer>B</answer>", "The answer is (B).", "B. Paris". Rejects a different letter, a letter
    outside `letters`, and prose that names several options without committing to one.
    """
    want = str(gold).strip().strip("().").upper()
    if len(want) != 1 or want not in letters.upper():
        raise ValueError(f"choice scorer: gold {gold!r} is not one of the option letters {letters}")
    return float(extract_choice(response, letters.upper()) == want)


# --- JSON function call ----------------------------------------------------------------------------------


def load_structured(value: Any) -> Any:
    """JSON text (or a Python literal, as some datasets store it) -> object; other values unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def extract_json_call(response: str) -> dict | None:
    """The first JSON object in the response that has a "name" key (text and code fences around it ignored)."""
    decoder = json.JSONDecoder()
    text = str(response)
    for start, char in enumerate(text):
        if char != "{":
            continue
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "name" in obj:
            return obj
    return None


def same_value(a: Any, b: Any) -> bool:
    """Equal JSON values, where 4 == 4.0 but True != 1, "4" != 4, and dicts compare key-order-free."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def json_call(response: str, gold: Any, arguments_key: str = "arguments") -> float:
    """The call `{"name": ..., "arguments": {...}}` in the response equals the gold call.

    Accepts text or reasoning around the JSON, code fences, any key order, 4.0 for 4. Rejects a wrong
    name, a missing, extra or different argument, "4" for 4, another case or spelling of a value, and a
    response without a parsable JSON object that has a "name" key.
    """
    want = load_structured(gold)
    if not isinstance(want, dict) or "name" not in want:
        raise ValueError(f"json_call scorer: gold {gold!r} is not a JSON object with a 'name'")
    call = extract_json_call(response)
    if call is None or call.get("name") != want["name"]:
        return 0.0
    got_args, want_args = call.get(arguments_key, {}), want.get(arguments_key, {})
    return float(isinstance(got_args, dict) and same_value(got_args, want_args))


# --- ToolAlpaca "Action / Action Input" ------------------------------------------------------------------

_ACTION = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(\S[^\n]*?)[ \t]*$", re.MULTILINE)
_ACTION_INPUT = re.compile(r"\A[ \t]*\n?[ \t]*Action[ _]?Input[ \t]*:[ \t]*", re.IGNORECASE)


def _action_input(value: Any) -> Any:
    """An action's input as an object: JSON text is decoded (nested JSON strings too); "" and "{}" are {}."""
    decoded = load_structured(value) if isinstance(value, str) else value
    if isinstance(decoded, str) and not decoded.strip():
        return {}
    return decoded


def extract_actions(response: str) -> list[dict] | None:
    """Every `Action: NAME` line followed by an `Action Input: ...` line, in order; None if one is malformed.

    The input is the JSON value that starts right after "Action Input:" (it may span several lines);
    a non-JSON input is kept as its text up to the end of the line.
    """
    text = str(response)
    decoder = json.JSONDecoder()
    actions: list[dict] = []
    for match in _ACTION.finditer(text):
        name = match.group(1).strip().strip("`")
        rest = text[match.end() :]
        head = _ACTION_INPUT.match(rest)
        if head is None:
            return None  # an action without its input cannot be checked
        body = rest[head.end() :]
        try:
            value, _ = decoder.raw_decode(body)
        except json.JSONDecodeError:
            value = body.split("\n", 1)[0].strip()
        actions.append({"Action": name, "Action_Input": _action_input(value)})
    return actions


def react(response: str, gold: Any) -> float:
    """ToolAlpaca-style tool calls: the response's Action / Action Input pairs equal the gold list, in order.

    `gold` is a list of {"Action": name, "Action_Input": object or JSON text} (or that list as JSON or
    Python-literal text, as the SDFT repository stores it). Accepts "Thought:" lines and other text around
    the pairs, "Action_Input" or "Action Input", any key order inside the input, 4.0 for 4. Rejects a wrong
    or missing action, a different, missing or extra argument, more or fewer actions than the gold, an
    Action line without an Action Input, and input that is not the gold's JSON.
    """
    want = load_structured(gold)
    if isinstance(want, dict):
        want = [want]
    if not isinstance(want, list) or not all(isinstance(a, dict) and "Action" in a for a in want):
        raise ValueError(f"react scorer: gold {gold!r} is not a list of {{'Action', 'Action_Input'}} objects")
    got = extract_actions(response)
    if not got or len(got) != len(want):
        return 0.0
    for pred, ref in zip(got, want, strict=True):
        if pred["Action"] != str(ref["Action"]).strip():
            return 0.0
        if not same_value(pred["Action_Input"], _action_input(ref.get("Action_Input", {}))):
            return 0.0
    return 1.0


# --- regex extraction ------------------------------------------------------------------------------------


def regex(
    response: str, gold: Any, pattern: str = r"(.+)", group: int = 1, which: str = "last", flags: str = ""
) -> float:
    """The pattern's match (group `group`, the `last` or `first` match) equals the gold after `normalize`.

    Example: pattern "Answer:\\s*(.+)" accepts "Work...\\nAnswer: 42" for gold 42. Rejects a response where
    the pattern does not match, or whose chosen match differs from the gold. `flags`: letters of i, s, m.
    """
    if which not in ("first", "last"):
        raise ValueError(f"regex scorer: which={which!r}; valid: first, last")
    compiled = re.compile(pattern, sum(getattr(re, f.upper()) for f in flags))
    matches = list(compiled.finditer(str(response)))
    if not matches:
        return 0.0
    value = (matches[-1] if which == "last" else matches[0]).group(group)
    return float(value is not None and any(normalize(value) == normalize(g) for g in _golds(gold)))


SCORERS: dict[str, Scorer] = {
    "exact": exact,
    "contains": contains,
    "numeric": numeric,
    "choice": choice,
    "json_call": json_call,
    "react": react,
    "regex": regex,
}


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid: {', '.join(SCORERS)}")
    return SCORERS[name]


def _fits(value: Any, default: Any) -> bool:
    """Whether an option value has the type of the option's default (an int is a fine float)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_options(name: str, options: dict[str, Any]) -> None:
    """Scorer options against the scorer's own signature: known names, the type of each default, and a
    regex `pattern` that compiles; one ValueError line naming the option and what is valid."""
    import inspect

    params = list(inspect.signature(get_scorer(name)).parameters.values())[2:]  # after (response, gold)
    valid = {p.name: p.default for p in params}
    for key, value in options.items():
        if key not in valid:
            takes = ", ".join(f"{k} (default {v!r})" for k, v in valid.items()) or "no options"
            raise ValueError(f"{key}={value!r}: scorer {name!r} takes {takes}")
        if not _fits(value, valid[key]):
            kind = "a number" if isinstance(valid[key], float) else type(valid[key]).__name__
            raise ValueError(f"{key}={value!r}: scorer {name!r} wants {kind} (default {valid[key]!r})")
    if name == "regex":
        try:
            re.compile(options.get("pattern", valid["pattern"]))
        except re.error as err:
            raise ValueError(f"pattern={options['pattern']!r}: not a valid regex ({err})") from None


def describe(name: str) -> str:
    """The scorer's documentation (what it accepts and rejects), for generated READMEs."""
    doc = get_scorer(name).__doc__ or ""
    return " ".join(doc.split())


def make_scorer(name: str, answer_field: str = "answer", **options: Any) -> Callable[[str, dict], float]:
    """`score(response, doc)` for a task's utils.py: scorer `name` against `doc[answer_field]`."""
    scorer = get_scorer(name)

    def score(response: str, doc: dict) -> float:
        return float(scorer(response, doc[answer_field], **options))

    score.__doc__ = f"{name} against doc[{answer_field!r}] ({options or 'default options'}): {describe(name)}"
    return score
