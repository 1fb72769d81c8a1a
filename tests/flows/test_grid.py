"""``kdhw.flows.grid``: the JSONL record of finished tasks (resume after a kill, torn and damaged lines), and the
same seeded trainings giving the same results sequentially and on a local Ray with 2 workers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import dataset

from kdhw.errors import CheckFailed, InputError
from kdhw.flows.grid import Grid, check_address, cpu_workers, load_done, run_tasks


def _square(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Raises on ``shared['fail_at']``: a sweep killed after some tasks have finished."""
    shared.setdefault("calls", []).append(task["key"])
    if task["x"] == shared.get("fail_at"):
        raise RuntimeError("killed")
    return {"y": task["x"] ** 2 * shared["k"]}


def _tasks(n: int) -> list[dict[str, Any]]:
    return [{"key": f"x={i}", "x": i} for i in range(n)]


def _lines(p: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    jl = tmp_path / "runs.jsonl"
    shared: dict[str, Any] = {"k": 3, "fail_at": 3}
    with pytest.raises(RuntimeError, match="killed"):
        run_tasks(_square, _tasks(6), shared, jl, progress=False)
    first = _lines(jl)
    assert [r["key"] for r in first] == ["x=0", "x=1", "x=2"]  # appended as each finished, before the failure
    assert [r["y"] for r in first] == [0, 3, 12] and all(r["task_seconds"] >= 0 for r in first)

    shared = {"k": 3}
    res = run_tasks(_square, _tasks(6), shared, jl, progress=False)
    assert shared["calls"] == ["x=3", "x=4", "x=5"]  # finished keys were skipped, not rerun
    assert [r["y"] for r in res] == [0, 3, 12, 27, 48, 75] and [r["key"] for r in res] == [t["key"] for t in _tasks(6)]
    assert [r["key"] for r in _lines(jl)] == [f"x={i}" for i in range(6)]  # one line per task, never twice

    shared = {"k": 3}
    assert run_tasks(_square, _tasks(6), shared, jl, progress=False) == res and "calls" not in shared


def test_a_second_writer_to_the_same_jsonl_is_refused_and_nothing_written(tmp_path: Path) -> None:
    import fcntl
    import subprocess
    import sys

    jl = tmp_path / "runs.jsonl"
    # another process (a second `kdhw sweep --out` on the same folder) holds the lock
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / '.runs.jsonl.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        shared: dict[str, Any] = {"k": 1}
        with pytest.raises(InputError, match=r"runs.jsonl: another kdhw process is writing to this file"):
            run_tasks(_square, _tasks(3), shared, jl, progress=False)
        assert "calls" not in shared and not jl.exists()
    finally:
        holder.kill()
        holder.wait()
    # once the holder is gone (the kernel drops its lock), the run goes ahead and releases its own lock
    assert [r["y"] for r in run_tasks(_square, _tasks(3), {"k": 1}, jl, progress=False)] == [0, 1, 4]
    fd = os.open(tmp_path / ".runs.jsonl.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: would raise BlockingIOError otherwise
    finally:
        os.close(fd)


def test_torn_last_line_is_rerun_and_damaged_line_refused(tmp_path: Path) -> None:
    jl = tmp_path / "runs.jsonl"
    jl.write_text(json.dumps({"key": "x=0", "y": 0}) + "\n" + '{"key": "x=1", "y"')  # killed mid-write
    assert list(load_done(jl)) == ["x=0"]
    shared: dict[str, Any] = {"k": 1}
    run_tasks(_square, _tasks(3), shared, jl, progress=False)
    assert shared["calls"] == ["x=1", "x=2"]
    assert [r["key"] for r in _lines(jl)] == ["x=0", "x=1", "x=2"]  # the torn tail was cut, not glued to

    jl.write_text(json.dumps({"key": "x=0", "y": 0}) + "\nnot json\n" + json.dumps({"key": "x=2", "y": 4}) + "\n")
    with pytest.raises(InputError, match=r"runs.jsonl:2: not a task record"):
        run_tasks(_square, _tasks(3), {"k": 1}, jl, progress=False)


def test_task_contract_and_worker_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate task key 'a'"):
        run_tasks(_square, [{"key": "a", "x": 1}, {"key": "a", "x": 2}], {"k": 1}, tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="non-empty string 'key'"):
        run_tasks(_square, [{"x": 1}], {"k": 1}, tmp_path / "r.jsonl")
    with pytest.raises(InputError, match=r"^--workers must be >= 1, got 0$"):
        Grid(workers=0)
    with pytest.raises(InputError, match=r"^--workers must be >= 0"):
        cpu_workers(-1)
    assert cpu_workers(0) == os.cpu_count() and cpu_workers(3) == 3 and cpu_workers(None) is None


@pytest.mark.parametrize("address, match", [
    ("127.0.0.1:1", r"^--address 127.0.0.1:1: no Ray cluster answers there \(.*\); start one with `ray start --head`"),
    ("headnode", r"^--address 'headnode': expected HOST:PORT of a Ray head node"),
    ("host:port", r"^--address 'host:port': expected HOST:PORT"),
])
def test_cluster_address_that_cannot_answer_is_one_line(address: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_address(address)


def _train_tiny(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """A real (1-epoch) brevitas QAT run, fully seeded; a fingerprint of every weight and quantizer buffer."""
    import hashlib

    from kdhw.config import validate
    from kdhw.train.distill import train_arm

    if task.get("bad"):
        raise InputError(f"task {task['key']}: bad input in a worker")
    if task.get("fails"):
        raise CheckFailed(f"task {task['key']}: not bit-exact")
    spec = {"layers": [{"type": "dense", "units": 6}, {"type": "relu"}, {"type": "dense", "units": 10}]}
    dcfg = validate({"distill": {"method": "none", "epochs": 1, "seed": task["seed"]}}).distill
    arm = train_arm("scratch", spec, dcfg, shared["data"], None, "none", False)
    h = hashlib.sha256()
    for k, v in arm.model.state_dict().items():
        h.update(k.encode() + v.detach().numpy().tobytes())
    return {"test_acc": arm.test_acc, "val_acc": arm.fit.best_val_acc, "weights_sha": h.hexdigest(),
            "pid": os.getpid()}


def test_ray_two_workers_give_the_sequential_results_and_keep_user_errors(tmp_path: Path) -> None:
    import ray

    shared = {"data": dataset("digits")}
    tasks = [{"key": f"seed={s}", "seed": s} for s in range(4)]
    seq = run_tasks(_train_tiny, tasks, shared, tmp_path / "seq.jsonl", progress=False)
    assert not ray.is_initialized()  # the sequential path never starts Ray

    with Grid(workers=2, progress=False) as g:
        par = g.run(_train_tiny, tasks, shared, tmp_path / "ray.jsonl")
        assert all(r["pid"] != os.getpid() for r in par)  # ran in Ray worker processes
        drop = lambda rs: [{k: v for k, v in r.items() if k not in ("pid", "task_seconds")} for r in rs]  # noqa: E731
        assert drop(par) == drop(seq)
        assert len({r["weights_sha"] for r in seq}) == 4  # the seeds really differ
        # a user error inside a worker comes back as the same class and one-line message (CLI: exit 2)
        bad = [{"key": "ok", "seed": 0}, {"key": "bad", "seed": 0, "bad": True}]
        with pytest.raises(InputError, match=r"^task bad: bad input in a worker$"):
            g.run(_train_tiny, bad, shared, tmp_path / "bad.jsonl")
        with pytest.raises(CheckFailed, match=r"^task f: not bit-exact$"):
            g.run(_train_tiny, [{"key": "f", "seed": 0, "fails": True}], shared, tmp_path / "f.jsonl")
        assert len(g._refs) == 1  # the shared data went into the object store once for all three batches
        assert g.stats.mode == "ray" and g.stats.executed >= 4
    assert not ray.is_initialized()  # what the grid started, it shut down


def _warns(task: dict[str, Any], shared: dict[str, Any]) -> int:
    import warnings

    warnings.warn("Bit width of the output clipped", UserWarning)
    return task["v"]


def test_a_worker_keeps_the_warnings_meant_for_the_user() -> None:
    """The body of every Ray task must not swallow Python warnings (a library's precision warning is for
    the user); a worker that filtered them all away would make this fail."""
    import torch

    from kdhw.flows.grid import _ray_call

    threads = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match="clipped"):
            assert _ray_call(_warns, {"v": 3}, {})["ok"] == 3
    finally:
        torch.set_num_threads(threads)
