"""The method registry: methods are found in their own modules, and a run key covers only what a method reads."""

from __future__ import annotations

import ast
import itertools
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.cli import compose
from harness.methods import (
    Held,
    StudentSize,
    get_method,
    held_state,
    method_names,
    method_spec,
    needs_teacher_copy,
    result_relevant,
)
from harness.run.validate import typed
from harness.tracking.store import run_key


def test_every_method_module_is_registered_with_a_config():
    from harness.cli import CONF_DIR

    names = set(method_names())
    assert _declared_in_source() == names  # every `METHOD = MethodSpec(name=...)` of the package, no more
    configured = {
        compose([f"method={p.stem}"]).method.name for p in (Path(CONF_DIR) / "method").glob("*.yaml")
    }
    assert configured == names  # no method without a YAML, no YAML naming an unregistered method
    for name in names:
        assert callable(get_method(name))


def _declared_in_source() -> set[str]:
    """The `name=` of every module-level `METHOD = MethodSpec(...)` in harness/methods/, read from the source
    (a second way to find the methods, independent of the registry's import scan)."""
    import harness.methods

    found = set()
    for path in Path(harness.methods.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if targets == ["METHOD"] and isinstance(node.value, ast.Call):
                found.update(k.value.value for k in node.value.keywords if k.arg == "name")
    return found


def test_sweep_over_a_distillation_knob_trains_sft_once():
    """`-m method=sft,sdft method.distill.temperature=0.7,1.0`: one SFT run key, two SDFT run keys."""
    keys: dict[str, set[str]] = {"sft": set(), "sdft": set()}
    for method, temperature in itertools.product(("sft", "sdft"), (0.7, 1.0)):
        cfg = compose([f"method={method}", f"method.distill.temperature={temperature}"])
        keys[method].add(run_key(result_relevant(asdict(typed(cfg)))))
    assert len(keys["sft"]) == 1 and len(keys["sdft"]) == 2
    assert not keys["sft"] & keys["sdft"]


def test_a_setting_sft_reads_still_changes_its_key():
    base, other = (compose(["method=sft", f"method.sft.loss_chunk_size={n}"]) for n in (64, 128))
    assert run_key(result_relevant(asdict(typed(base)))) != run_key(result_relevant(asdict(typed(other))))


def test_teacher_copy_is_declared_by_the_method():
    assert needs_teacher_copy({"name": "sdft", "distill": {"teacher": "ema"}})
    assert not needs_teacher_copy({"name": "sdft", "distill": {"teacher": "live"}})
    assert not needs_teacher_copy({"name": "sft", "distill": {"teacher": "ema"}})


def test_a_method_that_cannot_shard_declares_the_whole_tensors_it_holds():
    """What keeps a method off FSDP is state outside the sharded root; the memory estimate must see it."""
    student = StudentSize(params=100, trainable=10)
    for name in method_names():
        cfg = typed(compose([f"method={name}"]))
        held = held_state(cfg.method, student)
        assert all(isinstance(h, Held) and h.values > 0 for h in held), name
        if not method_spec(name).supports_fsdp:
            assert held, f"{name} cannot shard but declares nothing it holds (MethodSpec.held)"


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
    spec = method_spec(name)
    method = typed(compose([f"method={name}"])).method
    settings = spec.settings(method)
    leaves = list(_leaves(method))
    assert leaves, "the method section has keys"
    for dotted in leaves:
        changed = spec.settings(_with(method, dotted))
        if _read(dotted, spec.reads):
            assert changed != settings, f"{name}: {dotted} is in `reads` but its settings ignore it"
        else:
            assert changed == settings, f"{name}: {dotted} is outside `reads` but changes its settings"


def test_an_option_left_out_of_the_yaml_is_set_on_the_command_line_and_recorded():
    """conf/method/sft_l2.yaml names no option: `method.options.weight=...` still works without `+`, and the
    typed config records every option, so spelling out a default changes neither params nor run key."""
    given = typed(compose(["method=sft_l2", "method.options.weight=0.25"]))
    assert given.method.options == {"weight": 0.25}
    default = typed(compose(["method=sft_l2"]))
    assert default.method.options == {"weight": 0.01}  # L2Settings' default, declared once
    spelled = typed(compose(["method=sft_l2", "method.options.weight=0.01"]))
    assert run_key(result_relevant(asdict(default))) == run_key(result_relevant(asdict(spelled)))
    with pytest.raises(ValueError, match="method.options.wieght is not an option of 'sft_l2'; valid: weight"):
        compose(["method=sft_l2", "method.options.wieght=0.25"])


def test_a_method_that_cannot_shard_is_refused_at_start_up(monkeypatch):
    """Under FSDP, a method declaring supports_fsdp=False stops in the loop's preparation, before the model
    loads (load_model would fail the test if reached)."""
    import harness.run.loop as loop
    from harness.methods import check_shardable
    from harness.parallel.distributed import Replicas
    from tests.fast_config import FAST_ONE_TASK

    unshardable = sorted(n for n in method_names() if not method_spec(n).supports_fsdp)
    assert "sft_l2" in unshardable  # its anchor is a whole copy of the weights
    monkeypatch.setattr(loop, "replicas", lambda: Replicas(rank=0, world=1, sharded=True))
    monkeypatch.setattr(loop, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    cfg = compose([*FAST_ONE_TASK, "method=sft_l2"])
    with pytest.raises(ValueError, match=r"method 'sft_l2' does not support FSDP; .*sft\b"):
        loop._prepare(cfg)
    for name in method_names():  # only a sharded run is refused; every method runs unsharded
        check_shardable(name, sharded=False)
