"""SIGINT and SIGTERM stop a command cleanly: both raise `Interrupted` (a KeyboardInterrupt) in the main
thread, so that the loop's handlers mark the MLflow runs KILLED and keep what was complete, and the command
line prints one line with the command that resumes, exiting 128 + the signal number (130, 143).

SIGTERM is what a cluster scheduler (and `kill`) sends; Python's default would end the process at once, with
the MLflow runs left RUNNING. SIGKILL cannot be caught: a rerun of the same command resumes after it.
Under submitit (Hydra's SLURM launcher) the job runs in submitit's own process, whose handlers requeue it on
preemption; these handlers are installed by `harness` commands only.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by signal `signum`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def signal_name(err: BaseException) -> str:
    """What stopped the process: the signal's name; SIGINT for a plain KeyboardInterrupt (Ctrl-C where our
    handler is not installed); for a SystemExit, e.g. submitit's after it requeued a preempted job, that."""
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code}) (a scheduler's preemption or time limit, when under submitit)"
    return err.name if isinstance(err, Interrupted) else "SIGINT"


def exit_code(err: BaseException) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)


def close_progress_bars() -> None:
    """Close the progress bars of the interrupted work (lm-eval's, the stage's) now: freed later, after our
    last line, they would redraw themselves below it."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (a second one while the runs are being marked
    KILLED stops that too: the user insists, and a rerun resumes all the same)."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
