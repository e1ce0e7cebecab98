"""`harness report --folder`: the report rebuilt from a results folder without its MLflow store.

The check is a second loader against the first: a store-based report, its store then deleted, rebuilt from the
files it wrote, must give byte-identical tables, items and details. A folder in the older format (runs named
by run id, the group column holding the override string, no details.csv) gets readable labels and says what
it cannot show."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from test_report import _log_item_run, _right

from harness.cli import main
from harness.eval import metrics
from harness.methods import display_name
from harness.report.folder import DETAILS, load_folder, parse_overrides
from harness.report.write import write_folder_report, write_report
from harness.tracking.store import Tracker, flatten_config

TRAIN = {1: {"train/mean_kl_first": 0.25, "train/mean_step_s": 3.5}, 2: {"train/mean_kl_first": 0.125}}


def _run_without_items(tracker: Tracker, tag: str, seed: int) -> None:
    """A complete DFT run that logged scores but no item-level file (as runs of older builds did); its
    `method.tag` splits the DFT runs into groups, one of them with ", " in its value."""
    params = flatten_config(
        {"method": {"name": "dft", "tag": tag}, "seed": seed, "model": {"name": "m"}, "stream": {"name": "s"}}
    )
    params.update({"stream_tasks": '["a", "b"]', "suite_tasks": "[]"})
    tags = {"method": "dft", "stream": "s", "seed": seed, "model": "m"}
    parent = tracker.open_parent(f"s-dft-{tag}-{seed}", tags, params)
    R = pd.DataFrame([[0.0, 0.0], [0.5 + seed / 10, 0.0], [0.25, 0.5]], columns=["a", "b"])
    R.index.name = "stage"
    for stage in range(3):
        scores = {f"score/{t}": R.loc[stage, t] for t in R.columns}
        tracker.log_stage(parent, stage, "base" if stage == 0 else "ab"[stage - 1], scores)
    G = pd.DataFrame(index=R.index)
    tracker.finish_parent(parent, R, G, metrics.all_metrics(R, G))


def _store_report(results, labels=None):
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}", "fold", results / "mlartifacts")
    for method, seed in [(m, s) for m in ("sft", "sdft") for s in (0, 1)]:
        stages = [{"a": _right(0), "b": _right(0)}, {"a": _right(20 + seed, seed), "b": _right(1)}]
        stages.append({"a": _right(5, seed), "b": _right(20 if method == "sft" else 3, seed)})
        _log_item_run(tracker, "s", method, seed, stages)
    for tag, seed in (("x, y", 0), ("x, y", 1), ("z", 0), ("z", 1)):
        _run_without_items(tracker, tag, seed)
    # step curves and diagnostics for one run, as a training stage logs them
    parent = tracker.parents(complete_only=True)[0]
    for child in tracker.children(parent.info.run_id):
        stage = int(child.data.tags["stage"])
        for key, value in TRAIN.get(stage, {}).items():
            tracker.client.log_metric(child.info.run_id, key, value, step=stage)
        if stage:
            for step, loss in enumerate([1.5, 0.75], start=1):
                tracker.client.log_metric(child.info.run_id, "train_step/loss", loss, step=step)
    cfg = {"experiment_name": "fold", "results_dir": str(results), "tracking_uri": None}
    return write_report(OmegaConf.create({**cfg, "report": {"labels": labels or {}}}), display_name)


def test_the_rebuild_equals_the_store_report_file_by_file(tmp_path):
    out = _store_report(tmp_path / "store", labels={"sft": "Baseline"})
    before = {
        n: (out / n).read_bytes() for n in ("summary.csv", "runs.csv", "items.csv.gz", DETAILS, "summary.md")
    }
    shutil.rmtree(tmp_path / "store" / "mlartifacts")
    (tmp_path / "store" / "mlflow.db").unlink()
    write_folder_report(out, display=display_name)
    for name, data in before.items():
        assert data and (out / name).read_bytes() == data, name
    assert "Rebuilt from the results folder" not in (out / "summary.md").read_text()
    details = pd.read_csv(out / DETAILS)
    # the diagnostics kept, the timing left out (a rerun must rewrite the same bytes), the curve kept
    train = details[details["kind"] == "train"]
    assert sorted(train["value"].astype(float)) == [0.125, 0.25] and set(train["key"]) == {"mean_kl_first"}
    assert details[details["kind"] == "curve"]["value"].astype(float).tolist() == [1.5, 0.75, 1.5, 0.75]
    groups = {g.label: g for g in load_folder(out)}
    # the config's label kept; runs without item data kept (their logged scores); ", " inside a swept value
    assert sorted(groups) == ["Baseline", "DFT (tag=x, y)", "DFT (tag=z)", "SDFT"]
    assert [r.items for r in groups["DFT (tag=x, y)"].runs] == [None, None]
    assert groups["DFT (tag=x, y)"].runs[1].R.loc[1, "a"] == pytest.approx(0.6)
    run = next(r for g in groups.values() for r in g.runs if r.curves)
    # a rebuilt folder stays a folder that rebuilds: the second pass writes the same bytes again
    write_folder_report(out, display=display_name)
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    assert run.curves[1]["train_step/loss"] == {1: 1.5, 2: 0.75} and run.train[1] == {"mean_kl_first": 0.25}


def _old_folder(tmp_path):
    """A folder as reports wrote it before run keys and details.csv: runs by run_id, group = override string."""
    folder = tmp_path / "old"
    folder.mkdir()
    runs, items = [], []
    for weight, right in (("0.0", 2), ("1.0", 20)):
        for seed in (0, 1):
            rid = f"{int(float(weight))}e{seed}"  # keys that read as numbers unless read as text
            group = f"sdft (method.distill.sft_weight={weight})"
            runs.append(
                dict(
                    run_id=rid,
                    stream="s",
                    method="sdft",
                    seed=seed,
                    order=0,
                    tasks="a -> b",
                    model="m",
                    group=group,
                    item_level=True,
                )
            )
            for stage, (a, b) in enumerate([(0, 0), (right + seed, 1), (5, right)]):
                for task, k in (("a", a), ("b", b)):
                    scores = _right(k, seed)
                    items += [
                        dict(
                            stream="s",
                            method="sdft",
                            seed=seed,
                            order=0,
                            run_id=rid,
                            stage=stage,
                            task=task,
                            doc_id=i,
                            score=v,
                            generation="None" if i == 0 else f"g{i}",
                            target=f"t{i}",
                            prompt=f"p{i}",
                        )
                        for i, v in enumerate(scores)
                    ]
    pd.DataFrame(runs).to_csv(folder / "runs.csv", index=False)
    pd.DataFrame(items).to_csv(folder / "items.csv.gz", index=False)
    return folder


def test_an_old_folder_gets_readable_labels_and_says_what_it_lacks(tmp_path, capsys):
    folder = _old_folder(tmp_path)
    assert main(["report", "--folder", str(folder)]) == 0
    assert f"report written to {folder}" in capsys.readouterr().out
    runs = pd.read_csv(folder / "runs.csv")
    assert runs[["group", "overrides"]].drop_duplicates().values.tolist() == [
        ["SDFT", "sdft (method.distill.sft_weight=0.0)"],
        ["SDFT + SFT anchor", "sdft (method.distill.sft_weight=1.0)"],
    ]
    assert "run_id" not in runs.columns and "run_id" not in pd.read_csv(folder / "items.csv.gz").columns
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["method"]) == {"SDFT", "SDFT + SFT anchor", "base model"}
    rebuilt = pd.read_csv(folder / "items.csv.gz", keep_default_na=False, dtype={"generation": str})
    assert "prompt" in rebuilt.columns  # the stage runs' columns all kept
    assert set(rebuilt.loc[rebuilt["doc_id"] == 0, "generation"]) == {
        "None"
    }  # an answer, not a missing value
    md = (folder / "summary.md").read_text()
    assert "Accuracy matrix: SDFT + SFT anchor" in md and "sft_weight=1.0)" not in md.split("##")[2]
    assert "no details.csv" in md
    assert not (folder / DETAILS).exists()  # an empty one would hide that the details are unknown
    # a user's label wins; the rebuilt folder (now in the new format) reads back
    assert (
        main(["report", "--folder", str(folder), "--label", "sdft (method.distill.sft_weight=1.0)=Anchored"])
        == 0
    )
    assert set(pd.read_csv(folder / "runs.csv")["group"]) == {"SDFT", "Anchored"}


def test_parse_overrides_reads_what_group_runs_writes():
    assert parse_overrides("sft") == ("sft", ())
    assert parse_overrides("sdft (method.distill.sft_weight=1.0, trainer.lr=0.0002)") == (
        "sdft",
        (("method.distill.sft_weight", "1.0"), ("trainer.lr", "0.0002")),
    )
    with pytest.raises(ValueError, match="expected key=value"):
        parse_overrides("sdft (sft_weight)")


def test_a_folder_without_its_files_or_a_bad_label_is_named(tmp_path, capsys):
    (tmp_path / "runs.csv").write_text("stream\n")
    assert main(["report", "--folder", str(tmp_path)]) == 1
    assert "no items.csv.gz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["report", "--folder", str(tmp_path), "--label", "nolabel"])
    assert stop.value.code == 2 and "expected GROUP=TEXT" in capsys.readouterr().err


def test_the_committed_demo_report_rebuilds_byte_for_byte_from_its_folder(tmp_path):
    """The demo's report was written from its MLflow store by `make demo`; its folder alone (suite order,
    further eval tasks such as knowledge_ood, curves and diagnostics) must give back the same files. After a
    change to the report's text, refresh the committed files with `harness report --folder results/demo`."""
    demo = Path(__file__).resolve().parents[1] / "results" / "demo"
    copy = tmp_path / "demo"
    shutil.copytree(demo, copy)
    write_folder_report(copy, display=display_name)
    for name in (
        "summary.csv",
        "summary.md",
        "summary.tex",
        "report.html",
        "runs.csv",
        "items.csv.gz",
        DETAILS,
    ):
        assert (copy / name).read_bytes() == (demo / name).read_bytes(), (
            f"{name}: the committed demo report differs from its rebuild; if the report's code changed on "
            "purpose, run `harness report --folder results/demo`"
        )
