"""A quiet console: third-party logging goes to a log file, the user's run keeps the terminal.

lm-eval, datasets, transformers, MLflow and friends log warnings that are about their own defaults (how a
model object was passed, which kwargs a YAML overrides) and draw progress bars of their own; numpy warns
about empty slices while plots are drawn. None of it is about the user's run, and together it buried the
lines that are. `quiet_console(log_file)` sends all of it to `log_file` while it is open; the few messages
that do concern the run (a prompt cut to the context, a package missing) reach the console once, in our
words (`NOTICES`). `verbose=True` (`harness run -v`, `harness.verbose=true`) leaves everything as it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# top-level loggers of the libraries whose messages belong in the log file (children inherit the handlers)
THIRD_PARTY = (
    "lm_eval",
    "lm-eval",
    "datasets",
    "transformers",
    "mlflow",
    "alembic",
    "accelerate",
    "huggingface_hub",
    "urllib3",
    "filelock",
    "fsspec",
    "peft",
    "trl",
    "torch",
    "py.warnings",  # warnings.warn (numpy's RuntimeWarning, FutureWarnings), via logging.captureWarnings
)

# third-party messages that concern the user's run: a pattern and what the console says instead (once)
NOTICES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(left|right)[- ]truncat|Token indices sequence length is longer", re.I),
        "an evaluation prompt was longer than the model's context and was truncated; scores of long items "
        "may be low for that reason (raise model.max_length if the model allows it)",
    ),
    (
        re.compile(r"No module named '([\w.]+)'|requires the ([\w-]+) (?:library|package)", re.I),
        "a package an evaluation task asked for is missing: {0} (pip install it)",
    ),
)

_ACTIVE: list[Path] = []  # the log file of the quiet console now open (empty: none, or verbose)


@dataclass
class _Saved:
    handlers: list[logging.Handler]
    propagate: bool
    level: int


class _Notices(logging.Handler):
    """Prints our words for a third-party message that concerns the run, once per notice."""

    def __init__(self, stream: io.TextIOBase | None = None) -> None:
        super().__init__(logging.WARNING)
        self.stream = stream
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for pattern, words in NOTICES:
            found = pattern.search(text)
            if found is None:
                continue
            line = words.format(*(g for g in found.groups() if g), "?")
            if line not in self.said:
                self.said.add(line)
                print(f"note: {line}", file=self.stream or sys.stderr, flush=True)


class _LazyFile(logging.FileHandler):
    """A log file (and its folder) that exists only once something is written to it: a command that fails
    at its first check leaves nothing behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):  # noqa: ANN202 (logging's own signature)
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to the terminal (a plain StreamHandler; a FileHandler is a subclass)."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _configure_lm_eval() -> None:
    """lm-eval adds its own terminal handler the first time it evaluates; let it do so now, so that the
    handler exists to be taken off (it adds it only once per process)."""
    try:
        from lm_eval.utils import setup_logging
    except ImportError:  # lm-eval is not installed: nothing of it to quieten
        return
    setup_logging(logging.WARNING)


def _transformers_bars(enable: bool) -> bool:
    """Switch transformers' own progress bars on or off; returns whether they were on before."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # transformers is not installed: no bars of its own
        return False
    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enable else hf_logging.disable_progress_bar)()
    return before


@contextlib.contextmanager
def quiet_console(log_file: Path, verbose: bool = False) -> Iterator[Path | None]:
    """Third-party logging, warnings and MLflow's download bars go to `log_file` (appended) inside the block;
    yields the file, or None when `verbose` keeps everything on the console."""
    if verbose:
        yield None
        return
    _configure_lm_eval()
    to_file = _LazyFile(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    notices = _Notices()
    saved: dict[str, _Saved] = {}
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        saved[name] = _Saved(list(logger.handlers), logger.propagate, logger.level)
        for handler in [h for h in logger.handlers if _is_console(h)]:
            logger.removeHandler(handler)
        logger.addHandler(to_file)
        logger.addHandler(notices)
        logger.propagate = False  # not to the root logger, whose handler (Hydra's) prints to the terminal
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    progress_env = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    hf_bars = _transformers_bars(False)  # "Loading weights" at every model load: not about the run
    logging.captureWarnings(True)
    _ACTIVE.append(log_file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each distinct warning once per place, into the file
            yield log_file
    finally:
        _ACTIVE.pop()
        logging.captureWarnings(False)
        if hf_bars:
            _transformers_bars(True)
        if progress_env is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = progress_env
        for name, before in saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in before.handlers:
                logger.addHandler(handler)
            logger.propagate, logger.level = before.propagate, before.level
        to_file.close()


@contextlib.contextmanager
def third_party_output() -> Iterator[None]:
    """Inside a quiet console, what a library writes straight to stderr (lm-eval's request bars) goes to the
    log file; a no-op otherwise. Bars of our own that were created before the block keep the terminal."""
    if not _ACTIVE:
        yield
        return
    _ACTIVE[-1].parent.mkdir(parents=True, exist_ok=True)
    with open(_ACTIVE[-1], "a", encoding="utf-8") as sink, contextlib.redirect_stderr(sink):
        yield


def quiet() -> bool:
    """Whether a quiet console is open (our own progress bars then own the terminal)."""
    return bool(_ACTIVE)
