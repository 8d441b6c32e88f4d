"""`python3 -m vp_adopt SPEC.json` on the adopted host: what the deploy runs there.

SPEC (written by the deploy, no secret in it) names the ports, Valkey's unix socket, the
root-only password files, the final config and the record to write. Redis is stopped
the way it runs: its systemd unit (from the cgroup of the process on its port), its
init script, or SIGTERM; it is disabled only after Valkey has taken over the port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .core import AdoptError, Adoption, Endpoint
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
    """Stops the Redis on one port for good: the service now, its boot start afterwards."""

    def __init__(self, port: int) -> None:
        self.pid = listener_pid(port)
        if self.pid is None:
            raise AdoptError(f"no process listens on Redis's port {port}")
        self.unit = systemd_unit(self.pid)

    def stop(self) -> None:
        if self.unit:
            subprocess.run(["systemctl", "stop", self.unit], check=True)
        elif os.path.exists(INIT_SCRIPT) and _pidfile_pid() == self.pid:
            subprocess.run([INIT_SCRIPT, "stop"], check=True, capture_output=True)
        else:
            os.kill(self.pid, 15)
        deadline = time.monotonic() + 60
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.002)

    def disable(self) -> None:
        if self.unit:
            subprocess.run(["systemctl", "disable", "--quiet", self.unit], check=True)
        elif os.path.exists(INIT_SCRIPT):
            subprocess.run(["update-rc.d", "redis-server", "disable"], capture_output=True)


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


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    redis = RedisService(spec["redis_port"])
    adoption = Adoption(
        redis=Endpoint(spec["redis_port"], password=_secret(spec.get("redis_password_file"))),
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
    )
    try:
        report = adopt(adoption)
    except AdoptError as exc:
        print(f"adopt: stopped, Redis keeps serving: {exc}", file=sys.stderr)
        return 1
    os.replace(spec["final_config"], spec["config"])
    redis.disable()
    record = {**asdict(report), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(spec["marker"]).write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"adopt: done by {report.method}; Redis's data dir {report.redis_dir} and config"
        f" {report.redis_config or '(none)'} are kept; record in {spec['marker']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
