"""`mdyn sweep --executor slurm` against a real single-node Slurm: equals a local sweep, resubmits what failed,
survives concurrent writers, and refuses bad input with one line.

Every array runs at most 2 tasks at a time (the node has 2 CPUs); each task imports torch and transformers.
Run these alone with `pytest -m slurm`. All tests that need the cluster live in this one module: `make test`
runs pytest with `--dist loadfile`, so a single worker starts it.
"""

import json
import shlex
import subprocess
import sys
import time

import polars as pl
import pytest

from dynamics import slurm, store
from dynamics.hubcache import repo_folder
from dynamics.sources import HubSource
from dynamics.sweep import Settings, plan, run
from fitting.errors import UserError
from tests.cli import run_main
from tests.fixtures.hubdata import publish_redpajama_standin
from tests.fixtures.hubserver import HubServer, online_env
from tests.fixtures.tinyrepo import DUPLICATE

pytestmark = pytest.mark.slurm

SETTINGS = Settings(probe="embedded", n_seq=2, seq_len=32)
# One revision per task, so that tests can cancel or watch single revisions (chunks have their own test).
SWEEP_ARGS = [
    "--probe",
    "embedded",
    "--n-seq",
    "2",
    "--seq-len",
    "32",
    "--keep-checkpoints",
    "--revisions-per-task",
    "1",
]
ARRAY_TIMEOUT_S = 120


def submit(capsys, target, root, steps, parallelism=2):
    """`mdyn sweep TARGET --executor slurm` in process; returns the task table it submitted."""
    args = [
        "sweep",
        target,
        "--store",
        root,
        "--steps",
        steps,
        *SWEEP_ARGS,
        "--executor",
        "slurm",
        "--array-parallelism",
        parallelism,
    ]
    code, cap = run_main(args, capsys)
    assert code == 0 and "submitted job array" in cap.err, cap.err
    return json.loads(sorted((root / "slurm").glob("*/tasks.json"))[-1].read_text())


def wait_for_array(root, timeout=ARRAY_TIMEOUT_S) -> pl.DataFrame:
    """Poll `slurm.progress` until no task is pending or running; the final progress table."""
    deadline = time.monotonic() + timeout
    while True:
        states = slurm.progress(root)
        if not states["state"].is_in(["pending", "running"]).any():
            return states
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-2000:] for p in root.glob("slurm/*/logs/*.out"))
            pytest.fail(f"array not finished after {timeout}s:\n{states}\n{logs}")
        time.sleep(0.5)


def state_of(states: pl.DataFrame) -> dict[tuple[str, str], str]:
    return {(m, r): s for m, r, s in states.select("model", "revision", "state").iter_rows()}


def test_array_equals_local_sweep_and_concurrent_writes_stay_whole(slurm_cluster, tinyrepo, tmp_path, capsys):
    root = tmp_path / "slurm-store"
    start = time.perf_counter()
    table = submit(capsys, tinyrepo.repo_id, root, "every:6")
    states = wait_for_array(root)
    print(
        f"\narray of {len(table['tasks'])} tasks: {time.perf_counter() - start:.1f}s from submission to the last result"
    )
    assert [t["revision"] for t in table["tasks"]] == ["step0", "step32", "step2000", tinyrepo.corrupt]
    assert state_of(states) == {(tinyrepo.repo_id, t["revision"]): "done" for t in table["tasks"][:3]} | {
        (tinyrepo.repo_id, tinyrepo.corrupt): "failed"
    }

    local = tmp_path / "local-store"
    source = HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir)
    run(source, local, plan(source, local, "every:6", SETTINGS), SETTINGS)
    by_row = ["revision", "seq", "layer"]
    assert store.load(root).drop("measured_at").sort(by_row).equals(store.load(local).drop("measured_at").sort(by_row))
    ledger_columns = ["model", "revision", "step", "probe_id", "status", "detail", "duplicate_of"]
    assert (
        store.load(root, store.LEDGER)
        .select(ledger_columns)
        .sort("step")
        .equals(store.load(local, store.LEDGER).select(ledger_columns).sort("step"))
    )

    # Pairs of tasks started together on identical work and wrote at the same moments: every shard must
    # be whole on its own, hold exactly its revision's rows, and no temporary file may be left behind.
    shards = sorted((root / "measurements").glob("*/*.parquet"))
    assert len(shards) == 3 and all(pl.read_parquet(p).height == 2 * 2 for p in shards)
    assert len(list((root / "ledger").glob("*/*.parquet"))) == 4
    assert not list(root.rglob("*.tmp"))


def test_rerun_submits_only_cancelled_and_failed_tasks(slurm_cluster, tinyrepo, tmp_path, capsys):
    root = tmp_path / "store"
    first = submit(capsys, tinyrepo.repo_id, root, f"0,{tinyrepo.corrupt},9000")
    job = (root / "slurm" / first["submission"] / "job_id").read_text()
    # Tasks 0 and 1 start at once; task 2 waits for a free CPU and is cancelled before it gets one.
    subprocess.run(["scancel", f"{job}_2"], check=True, timeout=30)
    assert state_of(slurm.progress(root))[(tinyrepo.repo_id, "step9000")] == "failed"
    states = state_of(wait_for_array(root))
    assert states == {
        (tinyrepo.repo_id, "step0"): "done",
        (tinyrepo.repo_id, tinyrepo.corrupt): "failed",
        (tinyrepo.repo_id, "step9000"): "failed",
    }

    second = submit(capsys, tinyrepo.repo_id, root, f"0,{tinyrepo.corrupt},9000")
    assert [t["revision"] for t in second["tasks"]] == [tinyrepo.corrupt, "step9000"]
    wait_for_array(root)
    ledger = store.load(root, store.LEDGER)
    assert dict(ledger.select("revision", "status").iter_rows()) == {
        "step0": "ok",
        tinyrepo.corrupt: "corrupt",
        "step9000": "ok",
    }
    code, cap = run_main(["status", "--store", root], capsys)
    assert code == 0 and "Slurm tasks by state" in cap.out and f"{tinyrepo.corrupt} (task " in cap.out


def test_a_task_measures_a_chunk_of_revisions_and_resubmission_stays_per_revision(
    slurm_cluster, tinyrepo, tmp_path, capsys
):
    root = tmp_path / "store"
    steps = f"0,1,2,4,{tinyrepo.corrupt},9000"
    args = ["sweep", tinyrepo.repo_id, "--store", root, "--steps", steps, *SWEEP_ARGS[:-2], "--executor", "slurm"]
    code, cap = run_main(args, capsys)
    assert code == 0 and "submitted job array" in cap.err and ": 1 tasks" in cap.err, cap.err  # a tiny model
    (table,) = [json.loads(p.read_text()) for p in (root / "slurm").glob("*/tasks.json")]
    assert {t["array_index"] for t in table["tasks"]} == {0} and len(table["tasks"]) == 6
    states = state_of(wait_for_array(root))
    assert states[(tinyrepo.repo_id, tinyrepo.corrupt)] == "failed"
    assert sum(state == "done" for state in states.values()) == 5
    assert store.load(root)["revision"].n_unique() == 5
    # The rerun sends only the corrupt revision, in a task of its own.
    code, cap = run_main(args, capsys)
    assert code == 0 and ": 1 tasks" in cap.err, cap.err
    newest = json.loads(sorted((root / "slurm").glob("*/tasks.json"))[-1].read_text())
    assert [t["revision"] for t in newest["tasks"]] == [tinyrepo.corrupt]
    wait_for_array(root)


def test_family_goes_into_one_array_and_queued_tasks_are_not_submitted_twice(
    slurm_cluster, tiny_family, tmp_path, capsys
):
    root = tmp_path / "store"
    args = [
        "sweep",
        "tiny/neox-{sweep,twin}",
        "--store",
        root,
        "--steps",
        "0,1",
        *SWEEP_ARGS,
        "--executor",
        "slurm",
        "--slurm-arg",
        "begin=now+600",
    ]  # queued for ten minutes: pending throughout the test
    code, cap = run_main(args, capsys)
    assert code == 0 and "submitted job array" in cap.err, cap.err
    (table,) = [json.loads(p.read_text()) for p in (root / "slurm").glob("*/tasks.json")]
    assert [(t["model"], t["revision"]) for t in table["tasks"]] == [
        (m, r) for m in tiny_family for r in ("step0", "step1")
    ]
    assert "#SBATCH --begin=now+600" in (root / "slurm" / table["submission"] / "sweep.sbatch").read_text()
    try:
        code, cap = run_main(args, capsys)
        assert code == 0 and "nothing to submit" in cap.err and len(list((root / "slurm").iterdir())) == 1
        code, cap = run_main(["status", "--store", root], capsys)
        assert code == 0 and cap.out.count("\n  pending ") == 4, cap.out
    finally:
        subprocess.run(["scancel", "--name", f"mdyn-{table['submission']}"], check=True, timeout=30)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--partition", "no-such-partition"], "unknown Slurm partition 'no-such-partition'"),
        (["--time", "2h"], "not a Slurm time limit"),
        (["--slurm-arg", "qos"], "is not KEY=VALUE"),
    ],
)
def test_bad_slurm_input_is_one_line_exit_2(slurm_cluster, tinyrepo, tmp_path, capsys, extra, message):
    args = ["sweep", tinyrepo.repo_id, "--store", tmp_path / "store", *SWEEP_ARGS, "--executor", "slurm", *extra]
    code, cap = run_main(args, capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], cap.err
    assert not (tmp_path / "store").exists(), "nothing is planned or written before the input is checked"


def test_options_sbatch_refuses_leave_no_submission(slurm_cluster, tinyrepo, tmp_path, capsys):
    root = tmp_path / "store"
    args = [
        "sweep",
        tinyrepo.repo_id,
        "--store",
        root,
        "--steps",
        "0",
        *SWEEP_ARGS,
        "--executor",
        "slurm",
        "--mem",
        "lots",
    ]
    code, cap = run_main(args, capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("mdyn: error: sbatch refused the array: Invalid --mem"), cap.err
    assert not list((root / "slurm").iterdir()) and slurm.progress(root).is_empty()


def test_no_slurm_on_path_is_one_line_exit_2(tinyrepo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # python runs already; sbatch and friends are now out of reach
    args = ["sweep", tinyrepo.repo_id, "--store", tmp_path / "store", *SWEEP_ARGS, "--executor", "slurm"]
    code, cap = run_main(args, capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mdyn: error: Slurm not found"), cap.err


@pytest.mark.parametrize(
    "extra, message",
    [(["--executor", "cloud"], "unknown --executor 'cloud'"), (["--partition", "debug"], "need --executor slurm")],
)
def test_bad_executor_options_are_one_line_exit_2(tinyrepo, tmp_path, capsys, extra, message):
    code, cap = run_main(["sweep", tinyrepo.repo_id, "--store", tmp_path / "store", *SWEEP_ARGS, *extra], capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], cap.err


@pytest.mark.parametrize("text", ["30", "30:00", "4:00:00", "1-12", "1-12:30", "1-12:30:15", "INFINITE"])
def test_slurm_time_formats_pass(text):
    assert slurm.check_time(text) == text


@pytest.mark.parametrize("text", ["2h", "1:2:3:4", "-5", "1-", "", "1.5", "1-2-3"])
def test_other_time_formats_fail(text):
    with pytest.raises(UserError, match="not a Slurm time limit"):
        slurm.check_time(text)


def test_adaptive_design_goes_out_one_small_array_per_round(slurm_cluster, tinyrepo, tmp_path, capsys):
    root = tmp_path / "store"
    args = ["sweep", tinyrepo.repo_id, "--store", root, "--steps", "adaptive:8", "--per-round", "2", *SWEEP_ARGS]
    args += ["--executor", "slurm", "--array-parallelism", "2"]
    sizes = []
    for _ in range(5):  # the log-spaced start, then rounds of 2 (one more when a pick fails, as the corrupt one does)
        code, cap = run_main(args, capsys)
        assert code == 0, cap.err
        if "design stopped" in cap.err:
            break
        assert "submitted job array" in cap.err, cap.err
        table = json.loads(sorted((root / "slurm").glob("*/tasks.json"))[-1].read_text())
        sizes.append(len(table["tasks"]))
        assert all(t["note"].startswith("adaptive pick ") for t in table["tasks"])
        if len(sizes) == 1:  # while a round is queued, a rerun waits for it instead of planning the next
            job = (root / "slurm" / table["submission"] / "job_id").read_text()
            subprocess.run(["scontrol", "hold", job], check=True, timeout=30)
            code, cap = run_main(args, capsys)
            subprocess.run(["scontrol", "release", job], check=True, timeout=30)
            assert code == 0 and "still queued or running" in cap.err and len(list((root / "slurm").iterdir())) == 1
        wait_for_array(root)
    assert sizes[0] == 6 and len(sizes) >= 2 and all(size <= 2 for size in sizes[1:]), sizes
    ok = store.load(root, store.LEDGER).filter(pl.col("status") == "ok")
    assert ok.height == 8 and ok["detail"].str.starts_with("adaptive pick ").all()
    (path,) = (root / "adaptive").glob("*.json")
    design = json.loads(path.read_text())
    assert [len(r["picks"]) for r in design["rounds"]] == sizes and all("job" in r for r in design["rounds"])
    assert design["stop"]["reason"] == "budget" and design["stop"]["measured"] == 8


def test_the_readmes_cluster_example_runs_here(slurm_cluster, tinyrepo, tmp_path):
    """The README's family sweep on a cluster, as written but for what this one-node cluster lacks.

    Online against a hub-API server, so that the tasks download through HF_ENDPOINT as they would from the hub.
    """
    from tests.e2e.test_readme import README, is_cluster_example, readme_steps

    commands = [c for kind, c in readme_steps(README.read_text()) if kind == "shell" and is_cluster_example(c)]
    root = tmp_path / "pythia"
    # This node has 2 CPUs, 4000 MB, no GPU and one partition, `debug`.
    substitutions = {
        "--partition gpu": "--partition debug",
        "--gpus-per-task 1 ": "",
        "--cpus-per-task 4": "--cpus-per-task 1",
        "--mem 32G": "--mem 1G",
        "/shared/runs/pythia": str(root),
    }
    served = tmp_path / "served"
    sizes = ("14m", "70m", "160m", "410m")
    for size in sizes:
        tinyrepo.copy(served)
        repo_folder(served, tinyrepo.repo_id).rename(repo_folder(served, f"EleutherAI/pythia-{size}"))
    publish_redpajama_standin(served)
    with HubServer(served) as hub:
        env = online_env(hub, tmp_path / "home")
        sweep, status = commands
        for readme, here in substitutions.items():
            assert readme in sweep + status, f"{readme!r} no longer in the README's cluster example"
            sweep, status = sweep.replace(readme, here), status.replace(readme, here)
        mdyn = [sys.executable, "-m", "dynamics.cli.app"]
        submitted = subprocess.run(
            [*mdyn, *shlex.split(sweep)[1:]], env=env, capture_output=True, text=True, timeout=300
        )
        assert submitted.returncode == 0 and "submitted job array" in submitted.stderr, submitted.stderr
        states = wait_for_array(root, timeout=300)
        shown = subprocess.run([*mdyn, *shlex.split(status)[1:]], env=env, capture_output=True, text=True, timeout=300)

    # The tiny series has one truncated checkpoint: recorded as corrupt in every model, the rest measured.
    failed = states.filter(pl.col("state") != "done")
    assert set(failed["revision"]) == {tinyrepo.corrupt} and failed.height == len(sizes), states
    assert shown.returncode == 0 and "EleutherAI/pythia-410m" in shown.stdout, shown.stderr
    script = next(root.glob("slurm/*/sweep.sbatch")).read_text()
    assert "#SBATCH --account=myproj" in script and "#SBATCH --partition=debug" in script
    measured = store.load(root)
    assert set(measured["model"]) == {f"EleutherAI/pythia-{s}" for s in sizes}
    tasks = json.loads(next(root.glob("slurm/*/tasks.json")).read_text())["tasks"]
    assert {t["probe_source"] for t in tasks} == {"paper"} and measured["probe_id"].n_unique() == 1
    ledger = store.load(root, store.LEDGER)
    special = {tinyrepo.corrupt: "corrupt", tinyrepo.missing: "missing", DUPLICATE: "duplicate"}
    for _, rows in ledger.filter(pl.col("status") != "ok").group_by("model"):
        assert dict(rows.select("revision", "status").iter_rows()) == special
    assert ledger.group_by("model").len()["len"].to_list() == [len(tinyrepo.steps)] * len(sizes)
