"""The host-side adoption (`python -m valkey_plans.adopt SPEC`, what the deploy runs as
vp_adopt) killed with SIGKILL in each phase: Redis keeps serving every key and takes
writes again, and the next run completes and writes its record."""

from __future__ import annotations

import json
import os
import signal
import socket as socket_module
import subprocess
import sys
import time
from pathlib import Path

import pytest
import valkey

from tests.adopt_servers import RedisProcess, differences, seed, snapshot
from tests.valkey_server import ValkeyProcess
from valkey_plans.adopt import Adoption, Endpoint, Report, replicate, switch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ss -p sees Redis's pid as root")
KEYS = 3000


def spec(tmp_path: Path, redis: RedisProcess, socket: Path) -> Path:
    (tmp_path / "final.conf").write_text("# the final config\n")
    path = tmp_path / "spec.json"
    path.write_text(
        json.dumps(
            {
                "redis_port": redis.port,
                "valkey_socket": str(socket),
                "port": redis.port,
                "databases": 16,
                "final_config": str(tmp_path / "final.conf"),
                "config": str(tmp_path / "valkey.conf"),
                "marker": str(tmp_path / "done.json"),
                "state_file": str(tmp_path / "state.json"),
                "switch_file": str(tmp_path / "switch.json"),
                "log": str(tmp_path / "adopt.log"),
            }
        )
    )
    return path


def run_until(spec_path: Path, line: str) -> None:
    """Run the adoption and SIGKILL it when it prints `line`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "valkey_plans.adopt", str(spec_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr
    for out in proc.stderr:
        if line in out:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"never printed {line!r}"


@pytest.mark.parametrize(
    ("method", "phase"),
    [("replication", "waiting for the sync"), ("replication", "in sync"), ("copy", "copied")],
)
def test_killed_in_each_phase_redis_serves_and_the_next_run_completes(tmp_path, method, phase):
    redis = RedisProcess(tmp_path / "redis").start()
    socket = tmp_path / "valkey.sock"
    spare = ValkeyProcess(tmp_path / "valkey", unixsocket=str(socket)).start()
    try:
        seed(redis.client(), KEYS)
        before = snapshot(redis.client())
        spec_path = spec(tmp_path, redis, socket)
        if method == "copy":  # the Redis 8 path, run from this machine's Redis 7
            spec_path.write_text(
                json.dumps({**json.loads(spec_path.read_text()), "method": "copy"})
            )
        run_until(spec_path, phase)
        client = redis.client(socket_timeout=10)
        started = time.monotonic()
        client.set("after-kill", "1")  # held at most by CLIENT PAUSE's own bound
        assert time.monotonic() - started < 6
        assert differences(before, snapshot(client)) == []
        done = subprocess.run(
            [sys.executable, "-m", "valkey_plans.adopt", str(spec_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        moved = valkey.Valkey(port=redis.port)
        assert differences(before, snapshot(moved)) == [] and moved.get("after-kill") == b"1"
        assert json.loads((tmp_path / "done.json").read_text())["method"] == method
        assert (tmp_path / "valkey.conf").read_text() == "# the final config\n"
    finally:
        spare.stop()
        redis.stop()


def test_killed_after_redis_let_go_of_its_port_the_next_run_finishes_the_switch(tmp_path):
    """The window between Redis letting go of its port and Valkey taking it, left
    exactly as a run killed there leaves it (the adoption's own steps, up to that
    point): Valkey promoted with every key on its spare port, Redis running without a
    port, the switch file written. The next run serves the port from Valkey, stops
    Redis and writes the record."""
    redis = RedisProcess(tmp_path / "redis").start()
    socket = tmp_path / "valkey.sock"
    spare = ValkeyProcess(tmp_path / "valkey", unixsocket=str(socket)).start()
    try:
        seed(redis.client(), KEYS)
        before = snapshot(redis.client())
        spec_path = spec(tmp_path, redis, socket)
        adoption = Adoption(
            redis=Endpoint(redis.port),
            valkey=Endpoint(unix=str(socket)),
            port=redis.port,
            databases=16,
            stop_redis=redis.stop,
            switch_file=str(tmp_path / "switch.json"),
            redis_ident={"pid": redis.proc.pid, "unit": None},
        )
        with adoption.redis.connect() as r, adoption.valkey.connect() as v:
            replicate.follow(adoption, v)
            r.call("CLIENT", "PAUSE", 5000, "WRITE")
            replicate.caught_up(r, v, 5)
            replicate.promote(v)
            report = Report("replication", "7.0.15", {0: KEYS}, 0.0, 0.0)
            switch._let_go(adoption, r, report)
        assert not _listening(redis.port) and redis.proc.poll() is None
        done = subprocess.run(
            [sys.executable, "-m", "valkey_plans.adopt", str(spec_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "resumed the switch" in done.stderr
        moved = valkey.Valkey(port=redis.port)
        assert moved.info("server")["server_name"] == "valkey"
        assert differences(before, snapshot(moved)) == []
        record = json.loads((tmp_path / "done.json").read_text())
        assert record["resumed"] is True and record["method"] == "replication"
        assert redis.proc.wait(10) == 0, "Redis is stopped (SIGTERM, a clean exit)"
        assert not (tmp_path / "switch.json").exists()
        assert (tmp_path / "valkey.conf").read_text() == "# the final config\n"
    finally:
        spare.stop()
        redis.stop()


def _listening(port: int) -> bool:
    try:
        with socket_module.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
