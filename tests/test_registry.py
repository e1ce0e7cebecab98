"""The method registry: methods are found in their own modules, and a run key covers only what a method reads."""

from __future__ import annotations

import itertools

import pytest

from harness.cli import compose
from harness.config import to_container
from harness.methods import get_method, method_names, method_spec, needs_teacher_copy, result_relevant
from harness.tracking.store import run_key


def test_every_method_module_is_registered_with_a_config():
    from pathlib import Path

    from harness.cli import CONF_DIR

    names = set(method_names())
    assert {"sft", "sdft", "dft", "opsd", "sft_replay", "sft_l2"} <= names
    configured = {
        compose([f"method={p.stem}"]).method.name for p in (Path(CONF_DIR) / "method").glob("*.yaml")
    }
    assert configured == names  # no method without a YAML, no YAML naming an unregistered method
    for name in names:
        assert callable(get_method(name))


def test_sweep_over_a_distillation_knob_trains_sft_once():
    """`-m method=sft,sdft method.distill.temperature=0.7,1.0`: one SFT run key, two SDFT run keys."""
    keys: dict[str, set[str]] = {"sft": set(), "sdft": set()}
    for method, temperature in itertools.product(("sft", "sdft"), (0.7, 1.0)):
        cfg = compose([f"method={method}", f"method.distill.temperature={temperature}"])
        keys[method].add(run_key(result_relevant(to_container(cfg))))
    assert len(keys["sft"]) == 1 and len(keys["sdft"]) == 2
    assert not keys["sft"] & keys["sdft"]


def test_a_setting_sft_reads_still_changes_its_key():
    base, other = (compose(["method=sft", f"method.distill.loss_chunk_size={n}"]) for n in (64, 128))
    assert run_key(result_relevant(to_container(base))) != run_key(result_relevant(to_container(other)))


def test_teacher_copy_is_declared_by_the_method():
    assert needs_teacher_copy({"name": "sdft", "distill": {"teacher": "ema"}})
    assert not needs_teacher_copy({"name": "sdft", "distill": {"teacher": "live"}})
    assert not needs_teacher_copy({"name": "sft", "distill": {"teacher": "ema"}})


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ValueError, match="method 'grpo' is not known; valid methods: .*sdft.*sft_l2"):
        method_spec("grpo")


def _changed(value):
    """A different value of the same type (the check below needs only inequality, not validity)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value != 0 else 0.5 if isinstance(value, float) else 3
    if value is None:
        return 7
    return f"{value}_other"


def _leaves(obj, prefix=""):
    from dataclasses import fields, is_dataclass

    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        elif f.name not in ("name", "options"):
            yield f"{prefix}{f.name}"


def _with(method, dotted: str):
    from dataclasses import replace

    head, _, tail = dotted.partition(".")
    if not tail:
        return replace(method, **{head: _changed(getattr(method, head))})
    inner = getattr(method, head)
    return replace(method, **{head: replace(inner, **{tail: _changed(getattr(inner, tail))})})


def _read(dotted: str, reads: tuple[str, ...]) -> bool:
    return any(dotted == r or dotted.startswith(f"{r}.") for r in reads)


@pytest.mark.parametrize("name", sorted(method_names()))
def test_a_method_settings_see_exactly_the_keys_its_run_key_covers(name):
    """A method receives only `MethodSpec.settings(method section)`. Changing any key outside `reads` must
    leave those settings unchanged (else two runs with one run key could differ), and changing a key inside
    `reads` must change them (else the key splits runs that are the same)."""
    from harness.config import as_object

    spec = method_spec(name)
    method = as_object(compose([f"method={name}"]).method)
    settings = spec.settings(method)
    leaves = list(_leaves(method))
    assert leaves, "the method section has keys"
    for dotted in leaves:
        changed = spec.settings(_with(method, dotted))
        if _read(dotted, spec.reads):
            assert changed != settings, f"{name}: {dotted} is in `reads` but its settings ignore it"
        else:
            assert changed == settings, f"{name}: {dotted} is outside `reads` but changes its settings"
