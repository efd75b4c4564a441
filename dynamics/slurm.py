"""Run a sweep as one Slurm job array: each task measures a chunk of consecutive revisions of one model, in its own
process.

A submission is a folder STORE/slurm/<id>/ holding all it needs to be inspected and run again:
    sweep.sbatch     the job script; `sbatch sweep.sbatch` reruns it (a revision already measured ends at once)
    tasks.json       one entry per revision: index, array_index (the task measuring it), target, model,
                     revision, step, probe id; the measurement settings
    probe-<id>.npy   each model's probe token ids, so every task measures exactly what the plan chose
    logs/<job>_<array index>.out   each task's output
Each task (the hidden `mdyn sweep-task`) runs a plan of its revisions through `sweep.run`, the local sweep's own
code, so it writes its measurement shards and ledger rows under the store lock like the local sweep does.

Progress per revision comes from the ledger rows written after the submission, from `squeue` for tasks still
queued or running (found by the array's job name, unique per submission), and from `sacct` where the cluster
keeps accounting.
"""

import dataclasses
import json
import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from huggingface_hub import constants

import dynamics
from dynamics import store
from dynamics.files import write_atomic
from dynamics.probes import ProbeSet
from dynamics.sources import CheckpointSource, FolderSource, HubSource, open_source
from fitting.contracts import RETRIED
from fitting.errors import UserError

if TYPE_CHECKING:  # dynamics.sweep imports torch; `mdyn status` reads progress without it
    from dynamics.sweep import Plan, Settings

TIME_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_TIME = re.compile(r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|infinite|unlimited", re.IGNORECASE)
_COMMAND_TIMEOUT_S = 60
# Slurm job states (squeue %T, sacct State) by what they mean for a task; the rest are ended.
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
PROGRESS = {
    "model": pl.String,
    "revision": pl.String,
    "step": pl.Int64,
    "probe_id": pl.String,
    "state": pl.String,  # pending | running | done | failed | unknown
    "task": pl.String,  # Slurm job id and array index, e.g. 1234_5 ("" before the queue names it)
    "detail": pl.String,
    "submission": pl.String,
}


@dataclass(frozen=True)
class Resources:
    """What each array task asks Slurm for; None leaves the cluster's default."""

    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    array_parallelism: int | None = None  # at most this many tasks run at once (sbatch --array=...%K)
    extra: tuple[tuple[str, str], ...] = ()  # further sbatch options, (name, value)
    revisions_per_task: int | None = None  # consecutive revisions one task measures; None: `revisions_per_task`


# A task's own start (Python, torch, transformers) costs about this much; a task should spend ten times as long
# measuring. A revision costs about its weight bytes at this rate (download, load) and at least the floor.
TASK_IMPORT_S = 5.0
REVISION_BYTES_PER_S = 50e6
REVISION_FLOOR_S = 0.5
MAX_REVISIONS_PER_TASK = 64


def revisions_per_task(n_params: int | None) -> int:
    """How many consecutive revisions one array task measures, so that its start is under a tenth of its time.

    Estimated from the model's size (float32 weights): one revision per task for billion-parameter models,
    dozens for the tiny ones. Without a size, one per task.
    """
    if not n_params:
        return 1
    seconds = max(REVISION_FLOOR_S, 4 * n_params / REVISION_BYTES_PER_S)
    return int(min(MAX_REVISIONS_PER_TASK, max(1, math.ceil(10 * TASK_IMPORT_S / seconds))))


def parse_slurm_args(items: list[str]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` strings (a leading `--` allowed) as (KEY, VALUE) pairs for `#SBATCH --KEY=VALUE` lines."""
    pairs = []
    for item in items:
        key, sep, value = item.removeprefix("--").partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise UserError(f"--slurm-arg {item!r} is not KEY=VALUE with an sbatch option name as KEY, e.g. qos=long")
        pairs.append((key, value))
    return tuple(pairs)


def check_time(text: str) -> str:
    """A Slurm time limit, unchanged; UserError unless it has one of Slurm's formats."""
    if not _TIME.fullmatch(text.strip()):
        raise UserError(f"--time {text!r} is not a Slurm time limit; use {TIME_FORMATS}, e.g. 30, 4:00:00 or 1-12")
    return text.strip()


def check_cluster(resources: Resources) -> int:
    """Check that Slurm answers and knows the partition; returns its MaxArraySize (tasks per array)."""
    if shutil.which("sbatch") is None:
        raise UserError(
            "Slurm not found: no sbatch on PATH; run on a cluster's login node (or put Slurm's bin folder on PATH), "
            "or use --executor local"
        )
    if resources.time is not None:
        check_time(resources.time)
    if resources.partition is not None:
        answer = _slurm("scontrol", "show", "partition", resources.partition)
        if answer.returncode != 0:
            if "not found" not in answer.stdout + answer.stderr:
                raise UserError(f"cannot reach Slurm: {_first_line(answer)}; check the cluster (sinfo) and SLURM_CONF")
            known = sorted(set(_slurm("sinfo", "-h", "-o", "%R").stdout.split()))
            raise UserError(
                f"unknown Slurm partition {resources.partition!r}; use one of {', '.join(known) or '(none listed)'} "
                "(see sinfo), or leave --partition out for the default"
            )
    config = _slurm("scontrol", "show", "config")
    if config.returncode != 0:
        raise UserError(f"cannot reach Slurm: {_first_line(config)}; check the cluster (sinfo) and SLURM_CONF")
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", config.stdout, re.MULTILINE)
    return int(found.group(1)) if found else 1001


def exclude_in_flight(
    root: Path, plans: list[tuple[CheckpointSource, "Plan"]]
) -> tuple[list[tuple[CheckpointSource, "Plan"]], int]:
    """The plans without revisions an earlier submission still has queued or running; returns them and how many went."""
    flying = in_flight(root)
    kept, dropped = [], 0
    for source, the_plan in plans:
        keep = {
            rev: step
            for rev, step in the_plan.to_measure.items()
            if (the_plan.model, rev, the_plan.probe.probe_id) not in flying
        }
        dropped += len(the_plan.to_measure) - len(keep)
        kept.append((source, dataclasses.replace(the_plan, to_measure=keep)))
    return kept, dropped


def submit(
    root: Path,
    plans: list[tuple[CheckpointSource, "Plan"]],
    settings: "Settings",
    resources: Resources,
    max_array_size: int = 1001,
) -> tuple[str, Path, int] | None:
    """Record what the plans settle, write a submission folder and sbatch one array: (job id, folder, tasks).

    Each array task measures a chunk of consecutive revisions of one model (`Resources.revisions_per_task`,
    by default sized by `revisions_per_task`), reusing one model skeleton; tasks.json still lists every revision
    on its own, with the array index measuring it, so progress and resubmission stay per revision. None, after
    recording, when the plans leave nothing to measure.
    """
    from dynamics.sweep import record_settled

    tasks, n_array = [], 0
    for source, the_plan in plans:
        chunk = resources.revisions_per_task or revisions_per_task(the_plan.n_params)
        for i, (rev, step) in enumerate(the_plan.to_measure.items()):
            task = {
                "model": the_plan.model,
                "revision": rev,
                "step": step,
                "probe_id": the_plan.probe.probe_id,
                "probe_source": the_plan.probe.source,
                "array_index": n_array + i // chunk,
                **({"note": the_plan.notes[rev]} if the_plan.notes.get(rev) else {}),
                **_reopen(source),
            }
            tasks.append(task)
        n_array += math.ceil(len(the_plan.to_measure) / chunk)
    if n_array > max_array_size:
        raise UserError(
            f"{n_array} array tasks exceed this cluster's MaxArraySize of {max_array_size}; raise "
            "--revisions-per-task, or sweep fewer targets or steps per command (a rerun skips what is queued or "
            "measured)"
        )
    root = store.open_store(root)
    for _, the_plan in plans:
        record_settled(root, the_plan)
    if not tasks:
        return None
    stamp = datetime.now(UTC)
    name = f"{stamp:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    folder = root.resolve() / "slurm" / name
    (folder / "logs").mkdir(parents=True)
    for _, the_plan in plans:
        np.save(folder / f"probe-{the_plan.probe.probe_id}.npy", the_plan.probe.token_ids)
    table = {
        "submission": name,
        "created_at": stamp.isoformat(),
        "store": str(root.resolve()),
        "settings": {**dataclasses.asdict(settings), "probe_text": [str(p) for p in settings.probe_text]},
        "tasks": [{"index": i, **task} for i, task in enumerate(tasks)],
    }
    write_atomic(folder / "tasks.json", json.dumps(table, indent=1).encode())
    offline = any(task.get("offline") for task in tasks)
    script = _script(folder, root.resolve(), len(tasks), n_array, resources, offline)
    write_atomic(folder / "sweep.sbatch", script.encode())
    answer = _slurm("sbatch", "--parsable", str(folder / "sweep.sbatch"))
    if answer.returncode != 0:
        shutil.rmtree(folder)  # never submitted: it must not count as a submission whose tasks vanished
        raise UserError(f"sbatch refused the array: {_first_line(answer)}; check the Slurm options")
    job_id = answer.stdout.strip().split(";")[0]
    write_atomic(folder / "job_id", job_id.encode())
    return job_id, folder, n_array


def array_index(task: dict) -> int:
    """The array task that measures a revision (a submission from before chunks had one revision per task)."""
    return task.get("array_index", task["index"])


def run_task(tasks_file: Path, index: int) -> list[dict]:
    """Measure the revisions of array task `index` with the local sweep's code, one model skeleton for all; their
    ledger rows (empty when every one is already measured)."""
    from dynamics.sweep import Plan, Settings, complete, run

    table = json.loads(Path(tasks_file).read_text())
    mine = [task for task in table["tasks"] if array_index(task) == index]
    if not mine:
        last = max(array_index(task) for task in table["tasks"])
        raise UserError(f"{tasks_file} has array tasks 0-{last}, not {index}; check --index")
    root = Path(table["store"])
    # JSON keeps tuples as lists; a submission from before sites existed has none.
    fields = {**table["settings"], "probe_text": tuple(map(Path, table["settings"]["probe_text"]))}
    settings = Settings(**{**fields, "sites": tuple(fields.get("sites", Settings.sites))})
    todo = [task for task in mine if not complete(root, task["model"], task["revision"], task["probe_id"], settings)]
    if not todo:
        return []
    first = todo[0]  # a chunk holds revisions of one model and probe
    source = open_source(
        first["target"],
        offline=first.get("offline"),
        cache_dir=first.get("cache_dir"),
        eviction=first.get("eviction"),
        model=first.get("model_name"),
    )
    token_ids = np.load(Path(tasks_file).parent / f"probe-{first['probe_id']}.npy")
    probe = ProbeSet(token_ids=token_ids, probe_id=first["probe_id"], source=first["probe_source"])
    the_plan = Plan(
        model=source.model,
        probe=probe,
        to_measure={task["revision"]: task["step"] for task in todo},
        notes={task["revision"]: task.get("note", "") for task in todo},
    )
    return run(source, root, the_plan, settings).to_dicts()


def progress(root: Path) -> pl.DataFrame:
    """Each submitted revision's state in its newest submission: pending, running, done, failed, or unknown.

    done and failed come from the ledger row the task wrote (failed: corrupt or failed, which a rerun submits
    again); a task that ended without writing one (cancelled, out of time, killed) is failed too. unknown: the
    task left no row and no queue answers here (e.g. status read away from the cluster).
    """
    submissions = sorted(Path(root).glob("slurm/*/tasks.json"))
    if not submissions:
        return pl.DataFrame(schema=PROGRESS)
    tables = [json.loads(path.read_text()) for path in submissions]
    names = [f"mdyn-{t['submission']}" for t in tables]
    since = min(datetime.fromisoformat(t["created_at"]) for t in tables)
    queue = _queue(names)
    # squeue tells the current state; sacct, where there is accounting, also remembers jobs squeue forgot.
    known = {**(_accounting(names, since) or {}), **(queue or {})}
    measured = store.measured(root)
    ledger = store.load(root, store.LEDGER).sort("recorded_at")
    latest = {
        (m, r, p): (t, s, d)
        for m, r, p, s, d, t in ledger.select(
            "model", "revision", "probe_id", "status", "detail", "recorded_at"
        ).iter_rows()
    }
    rows = {}
    for table, name, path in zip(tables, names, submissions):
        created = datetime.fromisoformat(table["created_at"])
        for task in table["tasks"]:
            key = (task["model"], task["revision"], task["probe_id"])
            slurm_task, state = known.get((name, array_index(task)), ("", ""))
            recorded = latest.get(key)
            log = path.parent / "logs" / f"{slurm_task}.out"
            if state in _QUEUED:
                verdict, detail = "pending", ""
            elif state in _RUNNING:
                verdict, detail = "running", ""
            elif recorded and recorded[0] >= created:
                # A status the next plan measures again means the task failed.
                verdict = "failed" if recorded[1] in RETRIED else "done"
                detail = f"{recorded[1]}: {recorded[2]}" if recorded[2] else recorded[1]
            elif key in measured:  # e.g. by another submission, before this task ran and found it done
                verdict, detail = "done", "measured"
            elif state:
                verdict, detail = "failed", f"Slurm {state} before recording a result; see {log}"
            elif queue is None:
                verdict, detail = "unknown", "no result recorded and squeue does not answer here"
            else:
                verdict, detail = "failed", f"no longer queued and no result recorded; see {path.parent / 'logs'}"
            rows[key] = {
                "model": key[0],
                "revision": key[1],
                "step": task["step"],
                "probe_id": key[2],
                "state": verdict,
                "task": slurm_task,
                "detail": detail,
                "submission": table["submission"],
            }
    return pl.DataFrame(list(rows.values()), schema=PROGRESS).sort("model", "step")


def in_flight(root: Path) -> set[tuple[str, str, str]]:
    """(model, revision, probe_id) that a submission still has pending or running."""
    states = progress(root).filter(pl.col("state").is_in(["pending", "running"]))
    return set(states.select("model", "revision", "probe_id").iter_rows())


def _reopen(source: CheckpointSource) -> dict:
    """How a task opens the same source: the target and, for the hub, the cache and mode the plan used."""
    if isinstance(source, HubSource):
        return {
            "target": source.model,
            "offline": source.offline,
            "cache_dir": str(source.cache_dir),
            "eviction": source.eviction,
        }
    if isinstance(source, FolderSource):
        return {"target": str(source.root.resolve()), "model_name": source.model}
    raise TypeError(f"cannot hand a {type(source).__name__} to a Slurm task")


def _script(folder: Path, root: Path, n_revisions: int, n_tasks: int, resources: Resources, offline: bool) -> str:
    """The sbatch job script of one array: options, the environment the submitter had, one task per index."""
    array = f"0-{n_tasks - 1}" + (f"%{resources.array_parallelism}" if resources.array_parallelism else "")
    # One process per array task; an explicit task count is also what --gpus-per-task requires.
    options = [
        ("job-name", f"mdyn-{folder.name}"),
        ("array", array),
        ("ntasks", "1"),
        ("output", f"{folder}/logs/%A_%a.out"),
        ("chdir", str(folder)),
        ("export", "ALL"),
    ]
    for key in ("partition", "gpus_per_task", "cpus_per_task", "mem", "time"):
        if (value := getattr(resources, key)) is not None:
            options.append((key.replace("_", "-"), str(value)))
    options += list(resources.extra)
    # Tasks import the same massive-dynamics as the submitter and read the same HF cache, also when the
    # script is resubmitted from another shell.
    package_parent = str(Path(dynamics.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    python_path = os.pathsep.join(dict.fromkeys(filter(None, [package_parent, *inherited])))
    exports = {"PYTHONPATH": python_path, "HF_HUB_CACHE": str(constants.HF_HUB_CACHE)}
    if os.environ.get("HF_HOME"):
        exports["HF_HOME"] = os.environ["HF_HOME"]
    if offline:
        exports["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "-m", "dynamics.cli.app", "sweep-task", "--tasks", str(folder / "tasks.json")]
    return "\n".join(
        [
            "#!/bin/bash",
            f"# massive-dynamics sweep into {root}: {n_revisions} revisions in {n_tasks} array tasks.",
            "# Written by `mdyn sweep --executor slurm`; `sbatch` this file to run it again (measured tasks end at",
            "# once), or `sbatch --array=3,5 ...` for some tasks only (array_index in tasks.json).",
            *(f"#SBATCH --{key}={value}" for key, value in options),
            *(f"export {key}={shlex.quote(value)}" for key, value in exports.items()),
            f'exec {shlex.join(command)} --index "$SLURM_ARRAY_TASK_ID"',
            "",
        ]
    )


def _queue(names: list[str]) -> dict[tuple[str, int], tuple[str, str]] | None:
    """(job name, array index) -> (Slurm task id, state) from squeue, newest job first; None when squeue fails."""
    if shutil.which("squeue") is None:
        return None
    answer = _slurm("squeue", "-h", "-r", "-t", "all", "--name", ",".join(names), "-o", "%F|%K|%j|%T")
    if answer.returncode != 0:
        return None
    return _by_task(line.split("|") for line in answer.stdout.splitlines())


def _accounting(names: list[str], since: datetime) -> dict[tuple[str, int], tuple[str, str]] | None:
    """The same from sacct, which also knows jobs squeue has forgotten; None without accounting."""
    if shutil.which("sacct") is None:
        return None
    start = since.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    answer = _slurm(
        "sacct", "-n", "-P", "-X", "--array", "--name", ",".join(names), "-S", start, "-o", "JobID,JobName,State"
    )
    if answer.returncode != 0:
        return None
    fields = []
    for line in answer.stdout.splitlines():
        job, _, rest = line.partition("|")
        name, _, state = rest.partition("|")
        array_job, _, index = job.partition("_")
        fields.append([array_job, index, name, state.split(" ")[0]])
    return _by_task(fields)


def _by_task(fields) -> dict[tuple[str, int], tuple[str, str]]:
    tasks = {}
    for array_job, index, name, state in sorted(
        (f for f in fields if len(f) == 4 and f[1].isdigit()), key=lambda f: int(f[0]) if f[0].isdigit() else 0
    ):
        tasks[(name, int(index))] = (f"{array_job}_{index}", state)
    return tasks


def _slurm(*args: str) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a hung controller is an error after a minute, not a hang."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise UserError(f"Slurm's {args[0]} is not on PATH; install the Slurm client or use --executor local") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{args[0]} did not answer within {_COMMAND_TIMEOUT_S}s; check the cluster (sinfo)") from None


def _first_line(answer: subprocess.CompletedProcess) -> str:
    text = (answer.stderr.strip() or answer.stdout.strip() or f"exit status {answer.returncode}").splitlines()
    return text[0].removeprefix("sbatch: error: ").strip()
