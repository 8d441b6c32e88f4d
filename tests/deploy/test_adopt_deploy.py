"""The packaged deploy adopting a real redis-server on this machine (@local).

redis-server 7 runs on the port planned for `vpt-primary`; without `adopt` the deploy
refuses before its first operation; with it, the instance takes Redis's port and every
key, a rerun changes nothing, and the record names Redis's kept data dir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import valkey

from tests.adopt_servers import RedisProcess, Writer, differences, seed, snapshot
from tests.deploy.pyinfra_run import pyinfra
from tests.valkey_server import free_port

NO_EXPORTER = {"valkey_exporter": {"enabled": False}}


def test_redis_on_a_planned_port_is_refused_then_adopted_and_a_rerun_changes_nothing(
    test_plan, tmp_path: Path
):
    port = test_plan.ports["vpt-primary"]
    redis = RedisProcess(tmp_path / "redis", port=port, save="3600 1").start()
    try:
        seed(redis.client(), 2000)
        before = snapshot(redis.client())
        refused = pyinfra(test_plan(**NO_EXPORTER))
        assert refused.returncode != 0
        assert f"redis-server is running on port {port}" in refused.output
        assert '"adopt": {"from": "redis"}' in refused.output
        assert "Starting operation" not in refused.output

        adopt = {"from": "redis", "spare_port": free_port()}
        inventory = test_plan(primary={"adopt": adopt}, **NO_EXPORTER)
        writer = Writer(port)
        writer.start()
        run = pyinfra(inventory)
        time.sleep(0.3)
        writer.stop.set()
        writer.join(10)
        assert run.returncode == 0, run.output[-3000:]
        assert redis.proc is not None and redis.proc.poll() is not None, "Redis still runs"
        moved = valkey.Valkey(port=port)
        assert moved.info("server")["server_name"] == "valkey"
        assert differences(before, snapshot(moved)) == []
        lost = [n for n in writer.acked if moved.get(f"w:{n}") != str(n).encode()]
        assert writer.acked and lost == []
        record = json.loads(Path("/var/lib/valkey-plans/adopt/vpt-primary.done.json").read_text())
        assert record["method"] == "replication" and record["redis_dir"] == str(redis.workdir)
        assert (redis.workdir / "dump.rdb").exists(), "Redis's data dir is kept"

        again = pyinfra(inventory)
        assert again.returncode == 0 and again.changed == 0, again.output[-3000:]
    finally:
        redis.stop()
        for name in ("done.json", "spec.json", "state.json"):
            Path(f"/var/lib/valkey-plans/adopt/vpt-primary.{name}").unlink(missing_ok=True)
