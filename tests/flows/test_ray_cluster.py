"""Joining an existing Ray cluster (``--address``) that requires token authentication, as a head started the
usual way does in Ray 2.60, and failing fast, in one line, where the join cannot work.

One real head (``ray start --head --block``) runs for the module, bound to a free port, with its files in a
temp dir and its token in a HOME of its own; the test starts it in a process group of its own and kills
that group, by its id, at the end (never ``ray stop``, which would stop other users' Ray too), then checks
that no process of it is left.  Every client test gives this process a HOME of its own and no RAY_AUTH_*
variables, so the user's ``~/.ray/auth_token`` is never read.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.flows.grid import check_address, ray_token_source, run_tasks
from kdhw.flows.sweep import run_sweep

SMALL = {"teacher": {"arch": "mlp", "hidden": 16, "epochs": 2, "patience": 2}, "distill": {"epochs": 2}}
RAY = Path(sys.executable).with_name("ray")
_RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass
class Head:
    address: str
    token: str
    temp_dir: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _left(pgid: int, mark: str) -> list[str]:
    """Live (not zombie) processes of the head's group, or any whose command line names its temp dir."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if fields[0] != "Z" and (int(fields[2]) == pgid or mark in cmd):
            out.append(f"{d.name} {cmd[:100]}")
    return out


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    base = tmp_path_factory.mktemp("head")
    home = base / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)  # where Ray 2.60 keeps it: ~/.ray/auth_token
    temp_dir = tempfile.mkdtemp(prefix="kdhw-ray-")  # short: Ray puts unix sockets in it
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    log = base / "head.log"
    p = subprocess.Popen([str(RAY), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                          "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
                          "--temp-dir", temp_dir, "--block"],
                         env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            if p.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        assert "Token authentication is enabled" in log.read_text()  # a token in ~/.ray turns it on
        yield Head(f"127.0.0.1:{port}", token, temp_dir)
    finally:
        p.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        p.wait()
        deadline = time.monotonic() + 10
        while (left := _left(p.pid, temp_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes of the test's Ray head are still running: {left}"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """``client(home, **env)`` makes this process a client on another machine: that HOME, and no RAY_*
    variables but ``env``.  Afterwards os.environ is put back, and Ray's C++ view of it (auth mode, token
    cache), so a later local ``ray.init`` in this process sees what its environment says."""
    saved = dict(os.environ)

    def become(home: Path, **env: str) -> None:
        for k in [k for k in os.environ if k.startswith("RAY_")]:
            del os.environ[k]
        home.mkdir(parents=True, exist_ok=True)
        os.environ["HOME"] = str(home)
        os.environ.update(env)

    yield become
    os.environ.clear()
    os.environ.update(saved)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _never(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError("a task ran although the join should have failed")


@pytest.mark.slow
def test_a_sweep_joins_a_token_cluster_with_the_token_in_the_users_ray_folder(
        head: Head, tmp_path: Path, client: Callable[..., None]) -> None:
    import ray

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(head.token)
    client(home)
    assert ray_token_source() == str(home / ".ray" / "auth_token")
    res = run_sweep(validate(SMALL, "s.yaml"), "distill.temperature", [2], tmp_path / "o", workers=None,
                    address=head.address, log=lambda *_: None)
    g = res["grid"]
    assert (g["mode"], g["executed"], g["workers"], g["address"]) == ("ray", 2, 2, head.address)  # scratch + KD
    assert len((tmp_path / "o" / "runs.jsonl").read_text().splitlines()) == 2
    assert g["ray_startup_s"] < 15  # the join (measured ~0.5-1.5 s on 2 cores)
    # what kdhw set for the join (RAY_AUTH_MODE=token) is gone with the session
    assert not ray.is_initialized() and "RAY_AUTH_MODE" not in os.environ


@pytest.mark.slow
@pytest.mark.parametrize("how", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE=token"])
def test_a_token_in_rays_environment_variables_lets_the_join_through(
        head: Head, tmp_path: Path, client: Callable[..., None], how: str) -> None:
    (tmp_path / "tok").write_text(head.token)
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")} if how == "RAY_AUTH_TOKEN_PATH" else \
        {"RAY_AUTH_TOKEN": head.token}
    if how == "RAY_AUTH_MODE=token":
        env["RAY_AUTH_MODE"] = "token"  # set by the user: kept as it is
    client(tmp_path / "home", **env)
    before = {k: os.environ.get(k) for k in _RAY_ENV}
    check_address(head.address)  # the probe kdhw runs before ray.init: passes
    assert {k: os.environ.get(k) for k in _RAY_ENV} == before


@pytest.mark.slow
def test_joining_without_the_token_fails_fast_in_one_line(head: Head, tmp_path: Path, client: Callable[..., None],
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    import ray

    from kdhw.cli import main

    client(tmp_path / "home")
    a = head.address
    t = time.perf_counter()
    with pytest.raises(InputError, match=rf"^--address {a}: the cluster at {a} requires token authentication and "
                                         r"Ray finds no token here: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"
                                         rf".* or put the token at {tmp_path}/home/.ray/auth_token"):
        run_tasks(_never, [{"key": "a"}], {}, tmp_path / "r.jsonl", address=a, progress=False)
    seconds = time.perf_counter() - t
    assert seconds < 10, seconds  # ray.init alone retries for ~20 s
    assert "InvalidAuthToken" not in capfd.readouterr().err  # no C++ warning flood
    assert not ray.is_initialized() and "RAY_AUTH_MODE" not in os.environ

    os.environ["RAY_AUTH_TOKEN"] = "0" * 64  # a token, but not the head's
    with pytest.raises(InputError, match=r"requires token authentication and refused the token from RAY_AUTH_TOKEN"):
        check_address(a)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    with pytest.raises(InputError, match=r"requires token authentication but RAY_AUTH_MODE=disabled here"):
        check_address(a)

    # through the CLI: exit 2 and one line on stderr, before any training
    client(tmp_path / "home")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(SMALL))
    capfd.readouterr()
    assert main(["sweep", str(tmp_path / "c.yaml"), "--param", "distill.temperature", "--values", "2",
                 "--out", str(tmp_path / "o"), "--address", a, "--no-progress"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kdhw sweep: error: --address {a}: the cluster at {a} requires "
                                               "token authentication"), err
    assert not (tmp_path / "o").exists()


def test_joining_a_port_where_nothing_listens_fails_fast(tmp_path: Path) -> None:
    a = f"127.0.0.1:{_free_port()}"  # bound and closed again: nothing listens there now
    t = time.perf_counter()
    with pytest.raises(InputError, match=rf"^--address {a}: no Ray cluster answers there \(nothing listens at {a}\); "
                                         r"start one with `ray start --head`"):
        run_tasks(_never, [{"key": "a"}], {}, tmp_path / "r.jsonl", address=a, progress=False)
    assert time.perf_counter() - t < 5


@pytest.mark.slow
def test_joining_a_port_held_by_something_else_fails_in_seconds(tmp_path: Path) -> None:
    with socket.socket() as srv:  # listens, accepts, never speaks gRPC
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        a = f"127.0.0.1:{srv.getsockname()[1]}"
        t = time.perf_counter()
        with pytest.raises(InputError, match=rf"^--address {a}: something listens there but no Ray head answers"):
            check_address(a)
        assert time.perf_counter() - t < 15  # ~7 s: Ray's connect timeouts shortened for the probe
