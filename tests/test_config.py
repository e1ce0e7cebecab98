"""Every config under conf/ composes against the schema; bad choices fail early with the valid options."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import CONF_DIR, NOT_HYDRA_GROUPS, compose, main
from harness.methods import method_names

GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(
        p for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in ("hydra", *NOT_HYDRA_GROUPS)
    )
    for option in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg.stream.tasks, "a composed config always has a stream"
    if group == "method":
        assert cfg.method.name in method_names()


def test_defaults_are_the_paper_sdft():
    cfg = compose([])
    d = cfg.method.distill
    assert (
        cfg.method.name,
        d.teacher,
        d.ema_rate,
        d.divergence,
        d.support,
        d.num_rollouts,
        d.temperature,
    ) == ("sdft", "ema", 0.01, "forward", "full", 1, 1.0)
    assert cfg.trainer.weight_decay == 0.0 and cfg.trainer.max_grad_norm == 1.0
    assert cfg.model.name == "smollm2-135m-instruct"


# Composition mistakes are one-line ValueErrors (harness.run.preflight), not Hydra's many-line exceptions.


def test_unknown_group_option_lists_valid_ones():
    with pytest.raises(ValueError, match="Could not find 'method/nosuchmethod'") as err:
        compose(["method=nosuchmethod"])
    message = str(err.value)
    assert "sdft" in message and "sft" in message and "\n" not in message


def test_wrong_type_fails_at_composition():
    with pytest.raises(ValueError, match="trainer.lr=fast.*could not be converted to Float"):
        compose(["trainer.lr=fast"])


def test_unknown_key_fails_at_composition():
    with pytest.raises(
        ValueError, match=r"trainer.learning_rate: no such key in trainer; valid keys: .*\blr\b"
    ):
        compose(["trainer.learning_rate=1e-5"])


def test_semantic_validation_names_key_and_valid_values():
    with pytest.raises(ValueError, match="method.distill.divergence='kl'.*forward, reverse, jsd"):
        compose(["method.distill.divergence=kl"])


def test_cli_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in ("run", "report", "tasks", "bench"):
        assert sub in out
    assert main(["run", "--help"]) == 0
    assert "method" in capsys.readouterr().out
    assert main(["nonsense"]) == 2


def test_experiment_overlay_wins_over_top_level_defaults():
    cfg = compose(["experiment=smoke"])
    assert cfg.experiment_name == "smoke"
    assert cfg.trainer.max_steps == 2
    assert compose([]).experiment_name == "default"


def test_eval_backend_is_checked_before_anything_loads():
    with pytest.raises(ValueError, match="eval.backend='tgi' is not known; valid values: hf, vllm"):
        compose(["eval.backend=tgi"])
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # this machine: the extra is not installed
        with pytest.raises(
            ValueError, match=r"eval.backend=vllm needs the vllm package: pip install -e '.\[vllm\]'"
        ):
            compose(["eval.backend=vllm"])
    else:
        with pytest.raises(ValueError, match="eval.backend=vllm runs on a GPU"):
            compose(["eval.backend=vllm", "model.device=cpu"])
