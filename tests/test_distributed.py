"""Data parallelism: `accelerate launch` with 2 CPU processes against one process with the same global batch.

The 2 processes are started with our shipped configs (conf/accelerate/ddp.yaml: full replicas;
conf/accelerate/fsdp.yaml: weights sharded with FSDP2; torchrun underneath, gloo on this GPU-less machine). `accelerate launch --cpu --num_processes 2` would start *one* process here,
since accelerate's multi-CPU path is mpirun; the harness refuses that case with a message (tested below).

Why the losses can be compared tightly: the global batch is cut into the same micro-batches either way (2
processes x grad_accum 1 = 1 process x grad_accum 2), every micro-batch draws its rollouts from the same
seed, and the two micro-batch gradients are added once (float addition of two operands is commutative,
so all-reduce and accumulation give the same bits). We allow rtol 1e-5 on losses and gradient norms: room
for a backend that reduces in another order. A gradient averaged instead of summed halves the gradient
norm (rtol 0.5); a rank that trained on the whole batch instead of its shard changes the rollouts.

Under FSDP the gradients are the same bits too (reduce-scatter of two operands, the loss scaled by the
world size and the average dividing by it again are both exact), but the gradient *norm* is computed shard
by shard and then combined: a float32 sum of squares over ~3M elements in another order, measured here to
differ by up to 8e-5 relative from the unsharded norm (both are ~1e-5 away from the float64 norm). So
FSDP's norms get rtol 1e-3, still far from the factor 2 of a wrong reduction; the losses and the stage
checkpoints (written from the gathered copy) must match as tightly as DDP's.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.parallel.distributed import Replicas, micro_batches, parameter_fingerprint

ROOT = Path(__file__).resolve().parent.parent
DDP_CONFIG = ROOT / "conf" / "accelerate" / "ddp.yaml"
LAUNCH_CONFIGS = {"ddp": DDP_CONFIG, "fsdp": ROOT / "conf" / "accelerate" / "fsdp.yaml"}
COMMON = [
    "experiment=smoke",
    "model=tiny",
    "suite=none",
    "eval.in_context_items=0",
    "trainer.max_steps=3",
    "trainer.lr=1e-3",
    "trainer.warmup_steps=0",
    "checkpoints=all",
    # generate's rollouts on every side: FSDP-sharded models fall back to it (harness.decoding.choose), and
    # the one-process reference must draw the same rollouts (the static decoder's random stream differs)
    "method.distill.decoder=hf",
]


def test_micro_batches_partition_the_global_batch_the_same_way():
    batch = list(range(7))
    two_procs = micro_batches(batch, accum=1, world=2)
    one_proc = micro_batches(batch, accum=2, world=1)
    assert two_procs == one_proc == [[0, 1, 2, 3], [4, 5, 6]]
    assert micro_batches([0, 1], accum=2, world=2) == [[0], [1], [], []]  # a process may get nothing
    assert sum(micro_batches(batch, accum=3, world=2), []) == batch


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _launch(
    args: list[str], processes: int, parallelism: str = "ddp", check: bool = True
) -> subprocess.CompletedProcess:
    if processes == 1:
        cmd = [sys.executable, "-m", "harness.cli", "run", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(LAUNCH_CONFIGS[parallelism]),
            "--num_processes",
            str(processes),
            "-m",
            "harness.cli",
            "run",
            *args,
        ]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _step_metrics(results: Path, name: str) -> dict[tuple[int, int], float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    exp = client.get_experiment_by_name("smoke")
    out = {}
    for run in client.search_runs([exp.experiment_id], "tags.stage != '0'"):
        if "stage" not in run.data.tags:
            continue
        for m in client.get_metric_history(run.info.run_id, name):
            out[(int(run.data.tags["stage"]), m.step)] = m.value
    return out


# Every kind of evaluation, each with more than one unit to share: 2 eval tasks, and greedy batches of 2
# for the in-context score and the within-stage curve (4 items: one batch per process).
SHARED_EVAL = [
    "eval.in_context_items=4",
    "eval.every_steps=2",
    "eval.every_steps_items=4",
    "eval.batch_size=2",
]


def _items(results: Path) -> dict[int, pd.DataFrame]:
    """Each stage's items.csv.gz (every evaluated item, in the order written), without the run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    exp = client.get_experiment_by_name("smoke")
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        if "stage" in run.data.tags:
            path = client.download_artifacts(run.info.run_id, "items.csv.gz")
            out[int(run.data.tags["stage"])] = pd.read_csv(path).drop(columns="run")
    return out


def _assert_same_evaluation(multi: Path, single: Path, processes: int = 2) -> None:
    """`processes` evaluated (each its share, `eval/processes`), and what rank 0 merged is what one
    process computed: the same items in the same order with the same generations and scores, the same
    in-context score and within-stage curve. (The tiny random model answers alike to most prompts, so the
    rows' order, prompts and ids are what a wrong merge would change first.)"""
    assert set(_step_metrics(multi, "eval/processes").values()) == {float(processes)}
    assert set(_step_metrics(single, "eval/processes").values()) == {1.0}
    got, want = _items(multi), _items(single)
    assert sorted(got) == [0, 1, 2] and sorted(want) == [0, 1, 2]
    for stage, frame in want.items():
        assert len(frame) > 2 and frame["task"].nunique() == 2
        pd.testing.assert_frame_equal(got[stage], frame, check_exact=True, obj=f"items of stage {stage}")
    for key in ("train/teacher_in_context_acc", "step_eval/score", "step_eval/n_items"):
        curve = _step_metrics(single, key)
        assert curve and _step_metrics(multi, key) == curve, key


@pytest.fixture(scope="module")
def one_process_reference(tmp_path_factory):
    """The one-process run of each method, launched once and shared by the DDP and FSDP comparisons (the
    same arguments either way: the reference does not depend on how the 2-process run shards)."""
    done: dict[str, Path] = {}

    def reference(method: str) -> Path:
        if method not in done:
            results = tmp_path_factory.mktemp(f"single_{method}")
            args = [*COMMON, *SHARED_EVAL, f"method={method}", "trainer.grad_accum=2"]
            _launch([*args, f"results_dir={results}"], 1)
            done[method] = results
        return done[method]

    return reference


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_two_processes_match_one_process_with_the_same_global_batch(
    tmp_path, method, parallelism, one_process_reference
):
    """...and evaluate the same: under FSDP every rank gathers its own copy (the start-up memory plan
    allows it for this tiny model) and evaluates its share, merged on rank 0 (`_assert_same_evaluation`).

    SDFT under FSDP runs with gradient checkpointing (activations recomputed in backward, what a 7B model
    under FSDP needs): it must not change the step, so the same tolerances hold (observed: recomputing
    gives the same losses and gradient norms bit for bit as keeping the activations)."""
    args = [*COMMON, *SHARED_EVAL, f"method={method}"]
    if parallelism == "fsdp" and method == "sdft":
        args.append("trainer.gradient_checkpointing=true")
    multi = _launch([*args, "trainer.grad_accum=1", f"results_dir={tmp_path / 'multi'}"], 2, parallelism)
    single = one_process_reference(method)
    assert "accuracy matrix" in multi.stdout and multi.stdout.count("accuracy matrix") == 1  # rank 0 prints
    if parallelism == "ddp":
        assert "data parallel: 2 processes share each global batch of 4" in multi.stdout
    else:  # each process really holds half of the weights
        assert (
            "fully sharded (FSDP): 2 processes share each global batch of 4; this process stores 50.0%"
            in multi.stdout
        )
        assert "evaluation shared: each of 2 ranks holds a gathered copy" in multi.stdout

    losses_multi = _step_metrics(tmp_path / "multi", "train_step/loss")
    losses_single = _step_metrics(single, "train_step/loss")
    assert len(losses_single) == 6 and sorted(losses_multi) == sorted(losses_single)  # 2 stages x 3 steps
    for key, value in losses_single.items():
        assert losses_multi[key] == pytest.approx(value, rel=1e-5), key
    assert len({round(v, 6) for v in losses_single.values()}) > 1  # training moved the loss
    # Adam hardly notices a gradient scaled by 1/2 (it normalises), the gradient norm does: averaging
    # instead of summing across processes would halve it.
    norms_multi = _step_metrics(tmp_path / "multi", "train_step/grad_norm")
    for key, value in _step_metrics(single, "train_step/grad_norm").items():
        assert norms_multi[key] == pytest.approx(value, rel=1e-5 if parallelism == "ddp" else 1e-3), key
    _assert_same_checkpoints(tmp_path / "multi", single, parallelism)
    _assert_same_evaluation(tmp_path / "multi", single)
    if parallelism == "fsdp" and method == "sft":  # the fallback: rank 0 alone on its gathered copy
        rank0 = tmp_path / "rank0"
        alone = _launch(
            [*args, "trainer.grad_accum=1", "eval.fsdp_sharing=rank0", f"results_dir={rank0}"], 2, "fsdp"
        )
        assert "evaluation on rank 0 alone (eval.fsdp_sharing=rank0)" in alone.stdout
        _assert_same_evaluation(rank0, single, processes=1)
    # evaluation is dealt out (tooluse to rank 0, dates to rank 1) and gathered: every task scored, as 1 process
    for key in ("score/tooluse", "score/dates", "n_items/tooluse", "n_items/dates"):
        per_stage = _step_metrics(tmp_path / "multi", key)
        assert len(per_stage) == 2 and per_stage == _step_metrics(single, key), key
    processes = _step_metrics(tmp_path / "multi", "train/processes")
    assert set(processes.values()) == {2.0}
    # weights + gradients + AdamW state stored per process (counted exactly): FSDP halves them, DDP does not
    state_multi = _step_metrics(tmp_path / "multi", "train/state_mib")
    state_single = _step_metrics(single, "train/state_mib")
    for key, value in state_single.items():
        want = value if parallelism == "ddp" else value / 2
        assert state_multi[key] == pytest.approx(want, rel=0.01), key
    if method == "sdft":  # the same rollouts: same lengths, summed over both processes' shards
        tokens_multi = _step_metrics(tmp_path / "multi", "train_step/completion_tokens")
        assert tokens_multi == _step_metrics(single, "train_step/completion_tokens")
        _resume_repeats_stage_2(tmp_path / "multi", losses_multi, parallelism, args)

    from mlflow.tracking import MlflowClient  # exactly one parent and one child per stage: only rank 0 logs

    client = MlflowClient(f"sqlite:///{tmp_path / 'multi'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(r.data.tags.get("stage", "parent") for r in runs) == ["0", "1", "2", "parent"]
    (parent,) = [r for r in runs if "stage" not in r.data.tags]
    assert parent.data.params["parallelism"] == parallelism
    checkpointing = str(parallelism == "fsdp" and method == "sdft")
    assert parent.data.params["trainer.gradient_checkpointing"] == checkpointing


def _assert_same_checkpoints(multi: Path, single: Path, parallelism: str) -> None:
    """Every stage's weights, as written by rank 0 (under FSDP from the gathered copy), equal the single
    process's, and training did move them.

    DDP came out bit-identical (atol 1e-6 leaves room for another reduction order). FSDP's gradients agree
    to float32 rounding but not bit for bit (its layers compute from views into the all-gather buffer; a
    different memory layout can pick other kernel paths), and Adam divides each update by the gradient's own
    size, which magnifies rounding where a gradient entry nearly cancels: measured after 6 SFT steps at lr
    1e-3, 39 of 3.2M entries differ by more than 1e-6, the largest by 4.2e-5, the mean by 5e-9. So FSDP gets:
    no entry off by more than 1e-4 (a tenth of one step's largest update) and fewer than 1 in 10,000 entries
    off by more than 1e-6. A process training on the wrong shard moves most entries by ~1e-3 per step.
    """
    from safetensors.torch import load_file

    for stage in (1, 2):
        (a,) = multi.glob(f"checkpoints/smoke/*/stage_{stage}.safetensors")
        (b,) = single.glob(f"checkpoints/smoke/*/stage_{stage}.safetensors")
        got, want = load_file(str(a)), load_file(str(b))
        assert sorted(got) == sorted(want)
        gaps = {name: (got[name] - want[name]).abs() for name in want}
        largest = max(float(g.max()) for g in gaps.values())
        off = sum(int((g > 1e-6).sum()) for g in gaps.values())
        total = sum(g.numel() for g in gaps.values())
        if parallelism == "ddp":
            assert largest <= 1e-6, f"stage {stage}: largest weight gap {largest}"
        else:
            assert largest <= 1e-4 and off < total / 10_000, (
                f"stage {stage}: largest gap {largest}, {off} off"
            )
    (base,) = single.glob("checkpoints/smoke/*/stage_0.safetensors")
    start = load_file(str(base))
    assert max(float((want[k] - start[k]).abs().max()) for k in want) > 1e-4


def _resume_repeats_stage_2(
    results: Path, losses: dict[tuple[int, int], float], parallelism: str, args: list[str]
) -> None:
    """Forget stage 2 (delete its child run), rerun with 2 processes: rank 0 finds stages 0-1 done, every
    process loads the stage-1 checkpoint, and stage 2 trains to the same losses as the first time."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    exp = client.get_experiment_by_name("smoke").experiment_id
    stage2 = client.search_runs([exp], "tags.stage = '2'")
    assert len(stage2) == 1
    client.delete_run(stage2[0].info.run_id)
    rerun = _launch([*args, "trainer.grad_accum=1", f"results_dir={results}"], 2, parallelism)
    assert "stages 0..1 already done" in rerun.stdout
    again = _step_metrics(results, "train_step/loss")
    assert {k: v for k, v in again.items() if k[0] == 2} == {k: v for k, v in losses.items() if k[0] == 2}


def test_cpu_launch_without_mpi_is_refused(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "harness.cli",
        "run",
        *COMMON,
        f"results_dir={tmp_path}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "started a single process" in done.stderr + done.stdout
    assert "conf/accelerate/ddp.yaml" in done.stderr + done.stdout
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was created


def _worker(rank: int, world: int, init_file: str, queue) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        replicas = Replicas(rank=rank, world=world)
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        (model(torch.full((1, 3), float(rank + 1))).sum()).backward()  # rank r's gradient: input r + 1
        replicas.sum_gradients(model)
        queue.put(("grad", rank, model.weight.grad.tolist()))  # plain lists: the worker exits
        replicas.check_in_sync(model, "equal")
        with torch.no_grad():
            model.bias[0] += rank * 1e-6  # one replica drifts
        try:
            replicas.check_in_sync(model, "drifted")
            queue.put(("sync", rank, None))
        except RuntimeError as err:
            queue.put(("sync", rank, str(err)))
    finally:
        torch.distributed.destroy_process_group()


def test_gradients_are_summed_and_drift_is_caught(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    torch.multiprocessing.start_processes(
        _worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, start_method="spawn"
    )
    got = [queue.get(timeout=60) for _ in range(4)]
    grads = [g for kind, _, g in got if kind == "grad"]
    # d(sum W x)/dW = x per output row: inputs 1 and 2 summed = 3 everywhere, on both processes
    for g in grads:
        assert g == [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]
    errors = [e for kind, _, e in got if kind == "sync"]
    assert len(errors) == 2 and all(
        e and "drifted: the weights differ between processes" in e for e in errors
    )


def test_fingerprint_sees_a_tiny_change():
    model = torch.nn.Linear(4, 4)
    before = parameter_fingerprint(model)
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert parameter_fingerprint(model) != before


def test_fsdp_refuses_a_batch_that_leaves_a_micro_batch_empty(tmp_path):
    """Under FSDP every process must run as many forward passes as the others: 2 prompts cut into
    2 processes x 2 micro-batches leave two micro-batches empty (without the check, the run dies in gloo
    when one process skips its share). 3 prompts on 2 processes (micro-batches of 2 and 1) are fine."""
    done = _launch(
        [*COMMON, "method=sft", "trainer.batch_size=2", "trainer.grad_accum=2", f"results_dir={tmp_path}"],
        2,
        "fsdp",
        check=False,
    )
    assert done.returncode != 0
    assert (
        "FSDP: trainer.batch_size=2 cut into processes x grad_accum = 2 x 2 micro-batches leaves 2"
        in done.stderr
    )
    assert not (tmp_path / "checkpoints").exists()  # refused before any training


def test_fsdp_batch_rule():
    from harness.run.loop import check_fsdp_batch

    check_fsdp_batch(3, 1, 2)  # micro-batches of 2 and 1
    check_fsdp_batch(8, 2, 2)
    with pytest.raises(ValueError, match="leaves 1 of them empty"):
        check_fsdp_batch(5, 1, 4)  # ceil(5/4) = 2 per micro-batch: 2, 2, 1, 0


def test_single_process_needs_no_process_group(monkeypatch):
    import harness.parallel.distributed as distributed

    monkeypatch.setattr(distributed, "_REPLICAS", None)
    for var in (*distributed.WORLD_SIZE_VARS, "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    r = distributed.replicas()
    assert (r.rank, r.world, r.is_main, r.active) == (0, 1, True, False)
    assert r.broadcast({"a": 1}) == {"a": 1} and r.gather(3) == [3]


def test_fsdp_bf16_trains_both_stages_and_stays_close_to_one_process(tmp_path):
    """model.dtype=bfloat16 (float32 master weights, bf16 compute) under FSDP with shared evaluation.

    Why not the float32 tolerances: bf16 keeps 8 mantissa bits, so every activation and gradient carries
    a relative rounding of up to 2^-8 (0.4%), and FSDP's other memory layout picks other kernel paths and
    rounds elsewhere; Adam then turns a gradient entry that nearly cancels into a full-size update of
    either sign. Measured on this run (2 stages x 2 SFT steps, lr 1e-3): losses agree to 9e-6 relative
    (the first step of each stage bit for bit: same weights, same batch), gradient norms to 2e-4, weights
    by 5.7e-7 on average against 2.3e-3 of training movement, 0.03% of entries by more than 1e-4. The
    test allows 10x that: losses rel 1e-4, gradient norms rel 2e-3, a mean weight gap under 1% of the mean
    movement, under 0.3% of entries off by more than 1e-4. A process training on the wrong shard changes
    the losses by percent and moves the weights apart by about the training movement itself.
    Evaluation: stage 0 (identical weights, identical batches) must give identical items; later stages
    the same items in the same order, with finite scores (greedy answers may flip on bf16 rounding).
    """
    args = [*COMMON, "model.dtype=bfloat16", "method=sft", "trainer.max_steps=2"]
    args += ["eval.in_context_items=4", "eval.batch_size=2"]
    multi = _launch([*args, "trainer.grad_accum=1", f"results_dir={tmp_path / 'multi'}"], 2, "fsdp")
    _launch([*args, "trainer.grad_accum=2", f"results_dir={tmp_path / 'single'}"], 1)
    assert "bfloat16 compute" in multi.stdout and "evaluation shared: each of 2 ranks" in multi.stdout
    multi_dir, single_dir = tmp_path / "multi", tmp_path / "single"

    losses, want = _step_metrics(multi_dir, "train_step/loss"), _step_metrics(single_dir, "train_step/loss")
    assert sorted(want) == [(1, 1), (1, 2), (2, 1), (2, 2)] and sorted(losses) == sorted(want)
    for key, value in want.items():
        assert math.isfinite(losses[key]) and losses[key] == pytest.approx(value, rel=1e-4), key
    norms = _step_metrics(multi_dir, "train_step/grad_norm")
    for key, value in _step_metrics(single_dir, "train_step/grad_norm").items():
        assert norms[key] == pytest.approx(value, rel=2e-3), key

    from safetensors.torch import load_file

    (start,) = single_dir.glob("checkpoints/smoke/*/stage_0.safetensors")
    base = load_file(str(start))
    for stage in (1, 2):
        (a,) = multi_dir.glob(f"checkpoints/smoke/*/stage_{stage}.safetensors")
        (b,) = single_dir.glob(f"checkpoints/smoke/*/stage_{stage}.safetensors")
        got, ref = load_file(str(a)), load_file(str(b))
        assert all(bool(torch.isfinite(t).all()) for t in got.values()), f"stage {stage}: non-finite weights"
        gap = torch.cat([(got[k] - ref[k]).abs().flatten() for k in ref])
        moved = torch.cat([(ref[k] - base[k]).abs().flatten() for k in ref])
        assert float(gap.mean()) < 0.01 * float(moved.mean()), (stage, float(gap.mean()), float(moved.mean()))
        assert float((gap > 1e-4).float().mean()) < 0.003, stage

    assert set(_step_metrics(multi_dir, "eval/processes").values()) == {2.0}
    items, ref_items = _items(multi_dir), _items(single_dir)
    pd.testing.assert_frame_equal(items[0], ref_items[0], check_exact=True)
    for stage in (1, 2):
        keys = ["task", "doc_id", "item_id", "prompt"]
        pd.testing.assert_frame_equal(items[stage][keys], ref_items[stage][keys])
        assert items[stage]["score"].map(math.isfinite).all()
