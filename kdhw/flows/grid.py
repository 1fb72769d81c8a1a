"""Run independent tasks one after the other or on Ray, appending each result to a JSONL file as it lands.

Why this shape: a sweep is dozens of small, fully seeded trainings that need nothing from each other, so
they can run anywhere in any order, and the only state worth keeping is "which tasks are done and what
did they return".  That state is the JSONL file itself: one line per finished task, written and flushed
the moment the task returns, so a killed sweep loses at most the tasks that were running, and a rerun of
the same command skips every key already there (resume).

Sequential runs (``workers=1``, no ``address``) are a plain loop in this process: no Ray start-up (about
10 s on a 2-core machine), nothing to install on other machines, tracebacks where you expect them.  With
``workers > 1`` a local Ray is started on that many CPUs, or with ``address`` an existing cluster is
joined (kdhw must then be importable on its nodes).  Whatever every task reads (data set, teacher logits,
teacher weights) goes into the object store once with ``ray.put`` and every task receives that same
reference, so it is neither recomputed nor re-sent per task.  Results come back to this process, which
is the only writer of the JSONL file, so workers need no shared file system.

A ``KdhwError`` raised inside a task (bad input the user can fix) is re-raised here with its class and
its one-line message, so the CLI still prints one line and exits 2; anything else keeps its traceback.

Joining a cluster that requires a token: a head started with ``ray start --head`` turns Ray 2.60's token
authentication on whenever its machine has a token (``~/.ray/auth_token``, which ``ray get-auth-token
--generate`` or any local ``ray.init()`` writes), and a client is let in only if it runs with
``RAY_AUTH_MODE=token`` and the head's token, which Ray looks for in ``RAY_AUTH_TOKEN`` (the token),
``RAY_AUTH_TOKEN_PATH`` (a file holding it), then ``~/.ray/auth_token``.  Ray turns that mode on by itself
only for a local cluster, so for an explicit address kdhw sets ``RAY_AUTH_MODE=token`` for the join when
Ray finds a token and the user left RAY_AUTH_MODE unset (put back when the session ends).  Before
``ray.init`` (which would retry for ~20 s, printing a C++ warning each second) ``check_address`` asks the
head once and fails in under a second with one line: nothing listens there, or the cluster requires token
authentication and which token is missing or refused.  See docs/ray.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kdhw import errors
from kdhw.errors import InputError, KdhwError
from kdhw.util.atomic import jsonable as _jsonable


def task_digest(*parts: Any) -> str:
    """Short content hash that goes into a task key: a changed config, teacher or data set gets new keys,
    so a rerun into the same JSONL never mistakes an old result for the new question."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:10]


# fn(task, shared) -> JSON-serialisable dict; module-level, so Ray can ship it by reference
TaskFn = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
# driver-side hook run on each finished result before it is appended (e.g. write a checkpoint it carries)
ResultHook = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


# ---------------------------------------------------------------- the JSONL record of finished tasks

def load_done(jsonl: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``key -> result`` for every complete line of ``jsonl`` (empty when the file does not exist).

    A last line without its newline is what a kill during a write leaves: it is ignored (and cut off
    before the next append).  A damaged line anywhere else is refused, since silently dropping it would
    rerun a task whose result the user may have edited by hand.
    """
    p = Path(jsonl)
    if not p.is_file():
        return {}
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # torn last line
    done: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
            raise InputError(f"{p}:{i}: not a task record (a JSON object with a \"key\"); delete that line "
                             "to rerun its task, or the file to rerun every task")
        done[rec["key"]] = rec
    return done


def _cut_torn_tail(p: Path) -> None:
    """Drop a partial last line so the next record starts on a line of its own."""
    if not p.is_file() or p.stat().st_size == 0:
        return
    with open(p, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


def _append(p: Path, rec: dict[str, Any]) -> None:
    line = json.dumps(rec, sort_keys=True, default=_jsonable)
    with open(p, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


_HELD: set[Path] = set()  # JSONL files this process has locked (a sweep locks, then its grid runs re-enter)


@contextlib.contextmanager
def jsonl_lock(jsonl: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``jsonl`` for the block, or refuse at once when another process holds it.

    Why: two sweeps resuming into the same folder would both train the missing tasks and interleave their
    lines; the second one is told so instead (exit 2) and nothing is written.  The lock is an advisory
    ``flock`` on a hidden ``.<name>.lock`` file beside the JSONL, released by the kernel if the holder dies
    (the file stays: removing it would race with a process that has just opened it).
    """
    p = Path(jsonl).resolve()
    if p in _HELD:
        yield
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    lock = p.with_name(f".{p.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{p}: another kdhw process is writing to this file (lock {lock.name} held); "
                             f"wait for it or choose another --out") from None
        _HELD.add(p)
        try:
            yield
        finally:
            _HELD.discard(p)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _check_tasks(tasks: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for t in tasks:
        k = t.get("key")
        if not isinstance(k, str) or not k:
            raise ValueError(f"every task needs a non-empty string 'key', got {k!r}")
        if k in seen:
            raise ValueError(f"duplicate task key {k!r}")
        seen.add(k)


# ---------------------------------------------------------------- cluster address and token authentication

_AUTH_MODE = "RAY_AUTH_MODE"
# Ray's GCS connect timeouts while probing a HOST:PORT (its defaults: 5 s per channel, 30 s in all): a port
# held by something that is not a Ray head fails in ~7 s instead of 30 s or more; a real head answers in ms
_PROBE_TIMEOUTS = {"RAY_gcs_rpc_server_connect_timeout_s": "2", "RAY_py_gcs_connect_timeout_s": "3"}


def ray_token_path() -> Path:
    """The file Ray reads its token from when neither ``RAY_AUTH_TOKEN`` nor ``RAY_AUTH_TOKEN_PATH`` is set:
    ``~/.ray/auth_token`` (``$HOME`` first), where ``ray get-auth-token --generate`` and a local ``ray.init()``
    put the token they create."""
    return Path.home() / ".ray" / "auth_token"


def ray_token_source() -> str | None:
    """Where Ray finds an authentication token in this process, in Ray's own order (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), or None when it finds none.

    Ray's C++ token loader decides (its cache is reset first, so a changed environment counts); the answer
    only names the place for messages.  ``RAY_AUTH_TOKEN_PATH`` naming an unreadable or empty file is
    refused, as Ray refuses it.
    """
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    try:
        found = loader.has_token(ignore_auth_mode=True)
    except AuthenticationError as e:
        raise InputError(f"{_first_line(e).split('. Note:')[0]}; fix or unset RAY_AUTH_TOKEN_PATH") from None
    if not found:
        return None
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip():
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    return str(ray_token_path())


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _set_env(changes: dict[str, str | None]) -> dict[str, str | None]:
    """Apply ``changes`` (None = unset) to os.environ and to Ray's cached C++ config; return what undoes them."""
    old = {k: os.environ.get(k) for k in changes}
    for k, v in changes.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if changes:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")  # what Ray itself does after setting RAY_AUTH_MODE: its C++ side caches the mode
        AuthenticationTokenLoader.instance().reset_cache()  # ... and the token it found
    return old


def _join_env() -> dict[str, str | None]:
    """The environment a join needs: ``RAY_AUTH_MODE=token`` when Ray finds a token and the user left
    RAY_AUTH_MODE unset (Ray sends its token only in token mode, and turns that mode on by itself only for a
    local cluster, never for an explicit address)."""
    if _AUTH_MODE in os.environ or ray_token_source() is None:
        return {}
    return {_AUTH_MODE: "token"}


@contextlib.contextmanager
def _stderr_into(log: Any) -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ side writes its warnings) into ``log`` for the block."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _split_address(address: str) -> tuple[str, int]:
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address!r}: expected HOST:PORT of a Ray head node (GCS port, 6379 by "
                         "default), ray://HOST:PORT, or auto")
    return host.strip("[]"), int(port)


def _probe_gcs(address: str) -> None:
    """Ask the head's GCS for its cluster id once, with Ray's own client, its C++ warnings caught.

    ``ray.init`` retries a refused connection for ~20 s, printing a warning each second, before it gives
    up with a message that does not say why; one ``GcsClient`` answers in milliseconds, and an
    authentication failure comes back as its own exception class.
    """
    import sys
    import tempfile

    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError, RpcError

    timeout = {k: v for k, v in _PROBE_TIMEOUTS.items() if k not in os.environ}  # the user's own win
    err: Exception | None = None
    with tempfile.TemporaryFile() as log:
        undo = _set_env(timeout)
        try:
            with _stderr_into(log):
                try:
                    GcsClient(address=address)
                except Exception as e:  # sorted out below, with stderr back
                    err = e
        finally:
            _set_env(undo)
        if err is None:
            return
        if isinstance(err, AuthenticationError):
            mode, src, path = os.environ.get(_AUTH_MODE), ray_token_source(), ray_token_path()
            if mode is not None and mode.lower() != "token":
                why = (f"but {_AUTH_MODE}={mode} here: unset it (kdhw then turns token mode on for the join) or set "
                       f"{_AUTH_MODE}=token")
            elif src is None:
                why = (f"and Ray finds no token here: set {_AUTH_MODE}=token and RAY_AUTH_TOKEN (the token) or "
                       f"RAY_AUTH_TOKEN_PATH (a file holding it), or put the token at {path}")
            else:
                why = (f"and refused the token from {src}: give the head's token in RAY_AUTH_TOKEN or "
                       f"RAY_AUTH_TOKEN_PATH, or at {path}")
            raise InputError(f"--address {address}: the cluster at {address} requires token authentication {why} "
                             "(`ray get-auth-token` on the head prints its token)") from None
        if isinstance(err, RpcError):
            raise InputError(f"--address {address}: something listens there but no Ray head answers "
                             f"({_first_line(err)}); give the head's GCS port (`ray start --head --port`, 6379 by "
                             "default)") from None
        log.seek(0)  # anything else is not ours to explain: show what Ray printed, and the traceback
        sys.stderr.write(log.read().decode(errors="replace"))
        raise err


def check_address(address: str | None) -> None:
    """Fail in seconds, with one line, on an address where no cluster answers or that refuses to let us in.

    ``ray.init(address=...)`` on a dead ``HOST:PORT``, or on a head that requires a token this process does
    not send, retries for 20 s or more while printing C++ warnings, then says only that it failed.  Here a plain
    TCP connect tells "nothing listens" at once, and one GCS request (with ``RAY_AUTH_MODE=token`` where
    Ray finds a token, as the join itself will have) tells "requires token authentication" and what to set.
    ``auto`` (the cluster this machine belongs to) fails fast inside Ray already; ``ray://`` (Ray Client)
    only gets the TCP check.
    """
    if address is None or address == "auto":
        return
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as e:
        why = f"nothing listens at {host}:{port}" if isinstance(e, ConnectionRefusedError) else \
            (e.strerror or str(e) or type(e).__name__)
        raise InputError(f"--address {address}: no Ray cluster answers there ({why}); start one with "
                         "`ray start --head`, or leave --address out to run on this machine") from None
    if address.startswith("ray://"):
        return
    import ray

    if ray.is_initialized():
        return
    undo = _set_env(_join_env())
    try:
        _probe_gcs(address)
    finally:
        _set_env(undo)


# ---------------------------------------------------------------- the runner

def _ray_call(fn: TaskFn, task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Body of every Ray task: one torch thread, onnxruntime's log noise off, user errors returned as data.

    Python warnings are left alone (brevitas' and hls4ml's precision warnings reach the worker's log, as they
    would in a sequential run).  One thread: these models are tiny, so a second intra-op thread only adds
    hand-offs, and N workers on N cores should not fight over them.  Returning a KdhwError as a value keeps
    its class and message exact; raised through Ray it would arrive wrapped in a remote traceback.
    """
    import torch

    from kdhw.util.quiet import silence_onnxruntime

    silence_onnxruntime()
    torch.set_num_threads(1)
    t = time.perf_counter()
    try:
        return {"ok": fn(task, shared), "seconds": time.perf_counter() - t}
    except KdhwError as e:
        return {"error": [type(e).__name__, str(e)]}


def _driver_code_dirs() -> list[str]:
    """This process's import directories outside the Python installation, for local workers.

    Ray ships a task function by reference (module + name); a function from a module this process found
    through its own sys.path (a test file, a benchmark's helper module) must be importable by the local
    workers too.  Site-packages and the standard library are on their path already.
    """
    import sys

    skip = {Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    out = []
    for p in sys.path:
        d = Path(p or os.getcwd()).resolve()
        if d.is_dir() and not any(d == s or s in d.parents for s in skip) and str(d) not in out:
            out.append(str(d))
    return out


def _reraise(err: list[str]) -> None:
    name, msg = err
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, KdhwError)):
        cls = InputError
    raise cls(msg)


@dataclass
class GridStats:
    """What one ``Grid`` did: tasks run now vs found done, and where the wall time went."""

    executed: int = 0
    resumed: int = 0
    ray_startup_s: float = 0.0
    mode: str = "sequential"
    workers: int = 1
    task_seconds: list[float] = field(default_factory=list)


class Grid:
    """Executor for several batches of tasks that share one Ray session and one copy of shared data.

    Ray is started on the first batch that has work left (a fully resumed sweep never starts it) and
    shut down on exit only if this object started it.  ``workers`` is the number of tasks in flight;
    with ``address`` and ``workers=None`` it is every CPU the cluster has.
    """

    def __init__(self, workers: int | None = 1, address: str | None = None, progress: bool = True) -> None:
        if workers is not None and workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        self.address = address
        self.workers = workers
        self.progress = progress
        self.parallel = address is not None or (workers or 1) > 1
        self.stats = GridStats(mode="ray" if self.parallel else "sequential", workers=workers or 1)
        self._started = False
        self._ray_ready = False
        self._refs: dict[int, tuple[dict[str, Any], Any]] = {}  # id(shared) -> (shared, ObjectRef)
        self._undo_env: dict[str, str | None] = {}  # what close() puts back in os.environ

    def __enter__(self) -> "Grid":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._refs.clear()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._ray_ready = False
        _set_env(self._undo_env)  # the join's RAY_AUTH_MODE, once nothing of this session is left to use it
        self._undo_env = {}

    def _ray(self) -> Any:
        import ray
        from ray.exceptions import AuthenticationError

        if self._ray_ready:
            return ray
        t = time.perf_counter()
        if not ray.is_initialized():
            check_address(self.address)
            quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
            try:
                if self.address is not None:
                    if self.address != "auto":  # Ray turns token mode on by itself for a local cluster only
                        self._undo_env = _set_env(_join_env())
                    ray.init(address=self.address, **quiet)
                else:
                    from ray.job_config import JobConfig

                    ray.init(num_cpus=self.workers, include_dashboard=False,
                             job_config=JobConfig(code_search_path=_driver_code_dirs()), **quiet)
            except (ConnectionError, ValueError, RuntimeError, AuthenticationError) as e:
                _set_env(self._undo_env)
                self._undo_env = {}
                first = _first_line(e)
                raise InputError(f"--address {self.address}: cannot join the Ray cluster: {first}"
                                 if self.address else f"cannot start a local Ray: {first}") from None
            self._started = True
        if self.workers is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self.stats.workers = self.workers
        self.stats.ray_startup_s += time.perf_counter() - t
        self._ray_ready = True
        return ray

    def _shared_ref(self, ray: Any, shared: dict[str, Any]) -> Any:
        hit = self._refs.get(id(shared))
        if hit is None or hit[0] is not shared:
            hit = (shared, ray.put(shared))
            self._refs[id(shared)] = hit
        return hit[1]

    def run(self, fn: TaskFn, tasks: list[dict[str, Any]], shared: dict[str, Any], jsonl: str | os.PathLike[str],
            *, desc: str = "tasks", on_result: ResultHook | None = None,
            deadline: float | None = None) -> list[dict[str, Any]]:
        """Run every task whose key is not yet in ``jsonl``; return all results in task order.

        ``on_result(task, result)`` runs here, in this process, before the result is appended; what it
        returns is what gets recorded (it may strip a checkpoint it just wrote to disk).  With ``deadline``
        (a ``time.perf_counter()`` value) no task starts after it; the tasks left are ``None`` in the result.
        """
        _check_tasks(tasks)
        jsonl = Path(jsonl)
        with jsonl_lock(jsonl):
            return self._run_locked(fn, tasks, shared, jsonl, desc, on_result, deadline)

    def _run_locked(self, fn: TaskFn, tasks: list[dict[str, Any]], shared: dict[str, Any], jsonl: Path,
                    desc: str, on_result: ResultHook | None, deadline: float | None = None) -> list[Any]:
        from tqdm import tqdm

        done = load_done(jsonl)
        _cut_torn_tail(jsonl)
        todo = [t for t in tasks if t["key"] not in done]
        self.stats.resumed += len(tasks) - len(todo)
        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=desc, unit="task",
                   disable=not self.progress, dynamic_ncols=True)

        def record(task: dict[str, Any], res: dict[str, Any], seconds: float) -> None:
            if not isinstance(res, dict):
                raise TypeError(f"task {task['key']!r} returned {type(res).__name__}, not a dict")
            if on_result is not None:
                res = on_result(task, res)
            rec = {**res, "key": task["key"], "task_seconds": round(seconds, 3)}
            _append(jsonl, rec)
            done[task["key"]] = json.loads(json.dumps(rec, default=_jsonable))
            self.stats.executed += 1
            self.stats.task_seconds.append(seconds)
            bar.update(1)

        try:
            if todo and not self.parallel:
                for task in todo:
                    t = time.perf_counter()
                    if deadline is not None and t >= deadline:
                        break
                    res = fn(task, shared)
                    record(task, res, time.perf_counter() - t)
            elif todo:
                self._run_ray(fn, todo, shared, record, deadline)
        finally:
            bar.close()
        return [done.get(t["key"]) for t in tasks]

    def _run_ray(self, fn: TaskFn, todo: list[dict[str, Any]], shared: dict[str, Any],
                 record: Callable[[dict[str, Any], dict[str, Any], float], None], deadline: float | None) -> None:
        ray = self._ray()
        ref = self._shared_ref(ray, shared)
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        queue = list(todo)
        running: dict[Any, dict[str, Any]] = {}
        try:
            while queue or running:
                if deadline is not None and time.perf_counter() >= deadline:
                    queue.clear()  # the budget is spent: what runs finishes, nothing new starts
                while queue and len(running) < (self.workers or 1):
                    task = queue.pop(0)
                    running[remote.remote(fn, task, ref)] = task
                ready, _ = ray.wait(list(running), num_returns=1)
                for r in ready:
                    task = running.pop(r)
                    out = ray.get(r)
                    if "error" in out:
                        _reraise(out["error"])
                    record(task, out["ok"], out["seconds"])
        finally:
            for r in running:  # an error or Ctrl-C: what was finished is recorded, the rest is stopped
                ray.cancel(r, force=True)


def run_tasks(fn: TaskFn, tasks: list[dict[str, Any]], shared: dict[str, Any], jsonl: str | os.PathLike[str],
              workers: int | None = 1, address: str | None = None, progress: bool = True, *,
              desc: str = "tasks", on_result: ResultHook | None = None) -> list[dict[str, Any]]:
    """One batch of tasks: sequential in this process (``workers=1``, no address) or on Ray; see ``Grid``."""
    with Grid(workers, address, progress) as g:
        return g.run(fn, tasks, shared, jsonl, desc=desc, on_result=on_result)


def cpu_workers(n: int | None) -> int | None:
    """``--workers`` as given on the command line: 0 means every core of this machine."""
    if n is None:
        return None
    if n < 0:
        raise InputError(f"--workers must be >= 0 (0 = every core of this machine), got {n}")
    return n or (os.cpu_count() or 1)


__all__ = ["Grid", "GridStats", "check_address", "cpu_workers", "load_done", "run_tasks"]
