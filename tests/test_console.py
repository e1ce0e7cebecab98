"""The quiet console (harness.console): third-party log lines and warnings go to the log file, the user's run
keeps the terminal; `-v` shows everything."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import warnings

from fast_config import FAST_ONE_TASK

from harness.console import quiet_console, third_party_output

# what third-party output looks like on a terminal: lm-eval's and Hydra's WARNING records, Python warnings,
# MLflow's download bars and lm-eval's request bars
THIRD_PARTY_LINE = re.compile(
    r"WARNING|RuntimeWarning|FutureWarning|DeprecationWarning|Downloading artifacts|Running generate_until"
)


def test_library_warnings_go_to_the_file_and_notices_reach_the_console_once(tmp_path, capsys):
    log_file = tmp_path / "logs" / "x.log"
    datasets_log = logging.getLogger("datasets")
    before = (list(datasets_log.handlers), datasets_log.propagate, datasets_log.level)
    with quiet_console(log_file):
        logging.getLogger("lm_eval.models.huggingface").warning(
            "`pretrained` model kwarg is not of type `str`"
        )
        logging.getLogger("mlflow.store").info("Creating initial MLflow database tables...")
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=1)
        for _ in range(3):  # one note however often the library repeats itself
            logging.getLogger("transformers.tokenization_utils_base").warning(
                "Token indices sequence length is longer than the specified maximum sequence length"
            )
        with third_party_output():
            print("Running generate_until requests: 100%", file=sys.stderr)
    out, err = capsys.readouterr()
    text = log_file.read_text()
    assert "`pretrained` model kwarg" in text and "Creating initial MLflow" in text
    assert "RuntimeWarning: Mean of empty slice" in text and "Running generate_until" in text
    assert not THIRD_PARTY_LINE.search(out + err), out + err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "truncated" in notes[0]
    # handlers are put back: outside the block the library logs as it did before
    assert (list(datasets_log.handlers), datasets_log.propagate, datasets_log.level) == before


def test_verbose_leaves_the_console_alone(tmp_path, capsys):
    log_file = tmp_path / "x.log"
    with quiet_console(log_file, verbose=True) as where:
        logging.getLogger("datasets.builder").warning("a datasets warning")
        with third_party_output():
            print("bar", file=sys.stderr)
    assert where is None and not log_file.exists()
    assert "bar" in capsys.readouterr().err


def test_a_tiny_stage_leaves_no_third_party_line_on_the_console(tmp_path):
    """One stage of SFT on the tiny model through `harness run`: lm-eval's WARNING lines (it logs several at
    every evaluation), MLflow's INFO lines and lm-eval's bars land in the log file, not on the terminal; the
    run ends with the summary table, the report's path and the command that reproduces it."""
    overrides = [o for o in FAST_ONE_TASK if not o.startswith(("trainer.max_steps", "eval.limit"))]
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *overrides, "trainer.max_steps=1", "eval.limit=2"]
        + [f"results_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert not THIRD_PARTY_LINE.search(console), console[-3000:]
    assert "[stage 1: tooluse]" in proc.stdout  # our own summary lines are still there
    closing = proc.stdout[proc.stdout.index("| Method |") :].splitlines()
    assert closing[2].startswith("| base model | 1 |") and closing[3].startswith("| SFT | 1 |")
    assert f"report: {tmp_path / 'default' / 'report.html'}" in closing
    typed = [*overrides, "trainer.max_steps=1", "eval.limit=2", f"results_dir={tmp_path}"]
    assert closing[-1] == f"reproduce: harness run {shlex.join(typed)}"
    text = (tmp_path / "runs" / "logs" / "default.log").read_text()
    assert "WARNING [lm_eval" in text and "`pretrained` model kwarg" in text


def test_nothing_is_written_until_a_library_logs(tmp_path):
    """A command that fails at its first check (`harness report` without a store) leaves no log folder."""
    log_file = tmp_path / "runs" / "logs" / "x.log"
    with quiet_console(log_file):
        pass
    assert not (tmp_path / "runs").exists()
    with quiet_console(log_file):
        logging.getLogger("mlflow").warning("now there is something to keep")
    assert "now there is something to keep" in log_file.read_text()


def test_transformers_loading_bars_are_off_inside_and_back_after(tmp_path):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    with quiet_console(tmp_path / "x.log"):
        assert not hf_logging.is_progress_bar_enabled()  # "Loading weights" at each model load
    assert hf_logging.is_progress_bar_enabled()
    with quiet_console(tmp_path / "x.log", verbose=True):
        assert hf_logging.is_progress_bar_enabled()  # -v shows everything
