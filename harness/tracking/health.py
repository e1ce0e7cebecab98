"""A local MLflow store checked before anything writes to it: a corrupted SQLite file (a wiped header, a
truncated copy) would otherwise surface as a long SQLAlchemy traceback, after the model has loaded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from harness.tracking.keys import check_reachable

# Tables every MLflow SQLite store has, whatever its schema version.
MLFLOW_TABLES = ("alembic_version", "experiments", "runs")


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """An existing SQLite store opens read-only, passes SQLite's integrity check and holds MLflow's tables;
    else one ValueError line naming the file and what to do. A missing or empty file is fine (MLflow
    creates the store)."""
    db = sqlite_path(uri)
    if db is None or not db.is_file() or db.stat().st_size == 0:
        return
    todo = f"move it aside (mv {db} {db}.broken) to start a new store, or restore it from a backup"
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{db}: not a readable MLflow store (sqlite: {err}); {todo}") from None
    if verdict != "ok":
        raise ValueError(f"{db}: the MLflow store is damaged (sqlite integrity check: {verdict}); {todo}")
    missing = [t for t in MLFLOW_TABLES if t not in tables]
    if missing:
        raise ValueError(f"{db}: not an MLflow store (no table(s) {', '.join(missing)}); {todo}")


def server_gone(uri: str) -> ConnectionError | None:
    """For a run that failed with its parent open: the error to raise instead when the tracking server no
    longer answers. MLflow has by then retried for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7 with backoff
    factor 2: about four minutes) and marking the run FAILED would wait as long again, in vain."""
    try:
        check_reachable(uri)
    except ConnectionError:
        return ConnectionError(
            f"MLflow tracking server {uri} stopped answering during the run, and MLflow's retries ran out; "
            "what it logged is kept there: rerun the same command once the server is back, and the run resumes"
        )
    return None
