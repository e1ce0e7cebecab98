"""The method registry: methods are found in their own modules, and a run key covers only what a method reads."""

from __future__ import annotations

import itertools

import pytest

from harness.cli import compose
from harness.config import to_container
from harness.methods import get_method, method_names, method_spec, needs_teacher_copy, result_relevant
from harness.tracking import run_key


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
