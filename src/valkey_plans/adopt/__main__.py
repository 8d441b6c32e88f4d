"""`python3 -m vp_adopt SPEC.json` on the adopted host: what the deploy runs there.

SPEC (written by the deploy, no secret in it) names the ports, Valkey's unix socket, the
root-only password files, the final config, the record to write, the switch file and the
log. Redis is stopped the way it runs: its systemd unit (from the cgroup of the process
on its port), its init script, or SIGTERM; only after Valkey has taken over the port,
and then disabled. A run killed after Redis let go of its port is finished by the next
(the switch file names Redis's process; Valkey already holds every key).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .core import AdoptError, Adoption, Endpoint, Report, wait_port_free
from .resp import config_get, info
from .switch import adopt

INIT_SCRIPT = "/etc/init.d/redis-server"


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on `port` (ss -p, as root)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    for part in out.split("pid=")[1:]:
        digits = part.split(",")[0]
        if digits.isdigit():
            return int(digits)
    return None


def systemd_unit(pid: int) -> str | None:
    """The .service a process belongs to, when systemd is PID 1."""
    if not os.path.isdir("/run/systemd/system"):
        return None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        last = line.rsplit("/", 1)[-1]
        if last.endswith(".service"):
            return last
    return None


class RedisService:
    """Stops one Redis for good: the service now, its boot start afterwards.

    Found by its port at the start; after the switch (Redis has no port any more) by
    what the switch file recorded: its pid and systemd unit."""

    def __init__(self, pid: int, unit: str | None) -> None:
        self.pid, self.unit = pid, unit

    @classmethod
    def on_port(cls, port: int) -> RedisService:
        pid = listener_pid(port)
        if pid is None:
            raise AdoptError(f"no process listens on Redis's port {port}")
        return cls(pid, systemd_unit(pid))

    @property
    def ident(self) -> dict[str, object]:
        return {"pid": self.pid, "unit": self.unit}

    def stop(self) -> None:
        if self.unit:
            subprocess.run(["systemctl", "stop", self.unit], check=True)
        elif os.path.exists(INIT_SCRIPT) and _pidfile_pid() == self.pid:
            subprocess.run([INIT_SCRIPT, "stop"], check=True, capture_output=True)
        elif _is_redis(self.pid):
            os.kill(self.pid, 15)
        deadline = time.monotonic() + 60
        while _is_redis(self.pid) and time.monotonic() < deadline:
            time.sleep(0.002)

    def disable(self) -> None:
        if self.unit:
            subprocess.run(["systemctl", "disable", "--quiet", self.unit], check=True)
        elif os.path.exists(INIT_SCRIPT):
            subprocess.run(["update-rc.d", "redis-server", "disable"], capture_output=True)


def _is_redis(pid: int) -> bool:
    """Whether `pid` is still a live redis-server (not a reused pid, not a zombie)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm.startswith("redis-server") and _alive(pid)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (an exited child its parent has not reaped yet is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pidfile_pid() -> int | None:
    try:
        return int(Path("/run/redis/redis-server.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _secret(path: str | None) -> str | None:
    return Path(path).read_text().strip() if path else None


class Progress:
    """Progress lines to stderr (the deploy's output) and, with the pid, to the host's
    adoption log: an operator (or a test) sees which phase a run is in and which
    process runs it."""

    def __init__(self, log: str | None) -> None:
        self.log = log

    def __call__(self, message: str) -> None:
        print(f"adopt: {message}", file=sys.stderr, flush=True)
        if self.log:
            with open(self.log, "a") as out:
                out.write(f"{os.getpid()} {time.strftime('%H:%M:%S')} {message}\n")


def _adoption(spec: dict, redis: RedisService, progress: Progress) -> Adoption:
    return Adoption(
        redis=Endpoint(
            spec["redis_port"],
            user=spec.get("redis_user"),
            password=_secret(spec.get("redis_password_file")),
        ),
        valkey=Endpoint(
            unix=spec["valkey_socket"],
            user="admin" if spec.get("valkey_auth_file") else None,
            password=_secret(spec.get("valkey_auth_file")),
        ),
        port=spec["port"],
        databases=spec["databases"],
        stop_redis=redis.stop,
        method=spec.get("method", "auto"),
        state_file=spec["state_file"],
        switch_file=spec.get("switch_file"),
        redis_ident=redis.ident,
        progress=progress,
    )


def _redis_listens(port: int) -> bool:
    pid = listener_pid(port)
    return pid is not None and _is_redis(pid)


def resume(spec: dict, progress: Progress) -> tuple[Report, RedisService]:
    """Finish a switch a killed run began: Redis has let go of its port (and dropped its
    clients), Valkey holds every key and is promoted; Valkey takes the port, Redis is
    stopped (it saves as its own config says)."""
    began = json.loads(Path(spec["switch_file"]).read_text())
    redis = RedisService(int(began["redis"]["pid"]), began["redis"].get("unit"))
    valkey = _adoption(spec, redis, progress).valkey
    with valkey.connect() as conn:
        if info(conn, "replication").get("role") != "master":
            raise AdoptError("Valkey still follows Redis although the switch began")
        if config_get(conn, "port") != str(spec["port"]):
            wait_port_free(spec["port"])
            conn.call("CONFIG", "SET", "port", spec["port"])
    progress(f"resumed the switch: Valkey serves port {spec['port']}; stopping Redis")
    redis.stop()
    report = Report(**began["report"])
    report.resumed = True
    return report, redis


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    progress = Progress(spec.get("log"))
    switch_file = spec.get("switch_file")
    resuming = bool(switch_file and os.path.exists(switch_file))
    if resuming and _redis_listens(spec["redis_port"]):
        # Killed before Redis let go of its port: nothing was switched, start again.
        os.unlink(switch_file)  # type: ignore[arg-type]
        resuming = False
    try:
        if resuming:
            report, redis = resume(spec, progress)
        else:
            redis = RedisService.on_port(spec["redis_port"])
            report = adopt(_adoption(spec, redis, progress))
    except AdoptError as exc:
        print(f"adopt: stopped: {exc}", file=sys.stderr)
        return 1
    os.replace(spec["final_config"], spec["config"])
    redis.disable()
    record = {**asdict(report), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(spec["marker"]).write_text(json.dumps(record, indent=1) + "\n")
    if switch_file and os.path.exists(switch_file):
        os.unlink(switch_file)
    print(
        f"adopt: done by {report.method}; Redis's data dir {report.redis_dir} and config"
        f" {report.redis_config or '(none)'} are kept; record in {spec['marker']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
