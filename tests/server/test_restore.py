"""Restore against a real valkey-server and a real restic repository: refusals first."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import valkey

from tests.server.backup_helpers import instance_with_repository, restic, run_backup
from tests.valkey_server import free_port
from valkey_plans.backup.host import HostShell
from valkey_plans.backup.restore import RestoreError, restore
from valkey_plans.backup.settings import BackupSettings

LOCAL = HostShell()


class ConfInstance:
    """An instance started from its config file (daemonized), as a service would be."""

    def __init__(self, tmp: Path, name: str, appendonly: bool) -> None:
        self.dir = tmp / f"data-{name}"
        self.dir.mkdir()
        self.sock = str(tmp / f"{name}.sock")
        self.port = free_port()
        self.conf = tmp / f"{name}.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nunixsocket {self.sock}\ndir {self.dir}\n"
            f"dbfilename dump-{name}.rdb\nappenddirname appendonlydir-{name}\n"
            f"appendonly {'yes' if appendonly else 'no'}\nsave 3600 1\ndatabases 16\n"
            f"daemonize yes\npidfile {tmp}/{name}.pid\nlogfile {tmp}/{name}.log\n"
        )
        self.start = f"valkey-server {self.conf}"
        self.stop = f"valkey-cli -s {self.sock} SHUTDOWN >/dev/null 2>&1; sleep 0.2; true"

    def up(self) -> ConfInstance:
        subprocess.run(self.start, shell=True, check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except valkey.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("instance did not start")

    def client(self, db: int = 0) -> valkey.Valkey:
        return valkey.Valkey(unix_socket_path=self.sock, db=db)

    def down(self) -> None:
        subprocess.run(self.stop, shell=True)


@pytest.fixture
def conf_instances(tmp_path: Path):
    started: list[ConfInstance] = []

    def make(name: str = "main", appendonly: bool = False) -> ConfInstance:
        inst = ConfInstance(tmp_path, name, appendonly).up()
        started.append(inst)
        return inst

    yield make
    for inst in started:
        inst.down()


def dataset(client: valkey.Valkey, n: int = 300) -> None:
    """Every type, a third with TTLs, in db 0 and a few keys in db 5."""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        kind = i % 6
        key = f"k:{i}"
        if kind == 0:
            pipe.set(key, f"v{i}")
        elif kind == 1:
            pipe.hset(key, mapping={"a": i, "b": "x"})
        elif kind == 2:
            pipe.rpush(key, 1, 2, i)
        elif kind == 3:
            pipe.sadd(key, "a", i)
        elif kind == 4:
            pipe.zadd(key, {"a": 1.5, f"m{i}": i})
        else:
            pipe.xadd(key, {"f": i})
        if i % 3 == 0:
            pipe.expire(key, 3600)
    pipe.execute()


def dump_all(client: valkey.Valkey) -> dict:
    """Every key's DUMP and TTL in seconds (-1: none)."""
    return {k: (client.dump(k), client.ttl(k)) for k in sorted(client.scan_iter(count=1000))}


def same(got: dict, want: dict) -> bool:
    """The same keys and values, and TTLs within 2 s (time passes between the reads)."""
    return got.keys() == want.keys() and all(
        got[k][0] == want[k][0] and abs(got[k][1] - want[k][1]) <= 2 for k in want
    )


def backed_up(valkey_factory, tmp_path, conf_instances, appendonly=False):
    """A source instance with data and one good snapshot; a target instance with other data."""
    source, settings = instance_with_repository(valkey_factory, tmp_path, "main")
    dataset(source.client())
    source.client(db=5).set("db5-key", "1")
    done = run_backup(settings, tmp_path)
    assert done.returncode == 0, done.stderr
    target = conf_instances("target", appendonly=appendonly)
    target.client().set("before-the-restore", "1")
    target_settings = replace(
        settings,
        socket=target.sock,
        config=str(target.conf),
        rdb=str(target.dir / "dump-target.rdb"),
        data_dir=str(target.dir),
        aof_dir=str(target.dir / "appendonlydir-target") if appendonly else None,
        staging=str(tmp_path / "staging-restore"),
        stop=target.stop,
        start=target.start,
    )
    return source, settings, target, target_settings


@pytest.mark.parametrize("appendonly", [False, True], ids=["rdb", "aof"])
def test_a_restore_brings_back_every_key_value_and_ttl(
    valkey_factory, tmp_path, conf_instances, appendonly
):
    source, settings, target, tsettings = backed_up(
        valkey_factory, tmp_path, conf_instances, appendonly
    )
    said: list[str] = []
    checked = restore(LOCAL, tsettings, settings.repositories[0], None, "t1", said.append)
    assert checked.keys == {"db0": 300, "db5": 1}
    assert same(dump_all(target.client()), dump_all(source.client()))
    assert target.client(5).get("db5-key") == b"1"
    aside = Path(tsettings.data_dir) / "aside-main-t1"
    assert any(str(aside) in line for line in said), said
    assert any(aside.iterdir()), "the previous data was not kept"
    if appendonly:
        assert target.client().config_get("appendonly") == {"appendonly": "yes"}
        target.down()
        target.up()  # the AOF wins at start now: it must hold the restored data
        assert same(dump_all(target.client()), dump_all(source.client()))


def _refused(tsettings: BackupSettings, repo: str, target, expected: str) -> None:
    before = dump_all(target.client())
    with pytest.raises(RestoreError) as info:
        restore(LOCAL, tsettings, repo, None, "t2", lambda _: None)
    assert expected in str(info.value), str(info.value)
    assert same(dump_all(target.client()), before), "a refused restore touched the instance"
    assert not (Path(tsettings.data_dir) / "aside-main-t2").exists()


def _rebackup(settings, tmp_path, path: Path) -> str:
    """A snapshot of `path` as the runner would tag it, in a fresh repository."""
    repo = str(tmp_path / "repo-bad")
    restic(settings, "init", repo=repo)
    env = {**os.environ, "RESTIC_PASSWORD_FILE": settings.password_file}
    subprocess.run(
        ["restic", "-r", repo, "backup", "--quiet", "--stdin", "--stdin-filename", "dump.rdb"]
        + ["--tag", "instance=main", "--tag", "valkey=9.0.0", "--tag", "db0=300"],
        stdin=path.open("rb"),
        env=env,
        check=True,
    )
    return repo


def test_a_flipped_byte_in_the_repository_is_refused(valkey_factory, tmp_path, conf_instances):
    _, settings, target, tsettings = backed_up(valkey_factory, tmp_path, conf_instances)
    repo = Path(settings.repositories[0])
    packs = sorted((repo / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    pack = packs[-1]
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(pack, 0o600)
    pack.write_bytes(bytes(data))
    _refused(tsettings, str(repo), target, "refused")


def test_a_truncated_rdb_is_refused(valkey_factory, tmp_path, conf_instances):
    source, settings, target, tsettings = backed_up(valkey_factory, tmp_path, conf_instances)
    good = Path(settings.data_dir) / "dump-main.rdb"
    cut = tmp_path / "cut.rdb"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _refused(tsettings, _rebackup(settings, tmp_path, cut), target, "valkey-check-rdb")


def test_a_newer_format_rdb_is_refused_naming_both_versions(
    valkey_factory, tmp_path, conf_instances
):
    _, settings, target, tsettings = backed_up(valkey_factory, tmp_path, conf_instances)
    good = Path(settings.data_dir) / "dump-main.rdb"
    newer = tmp_path / "newer.rdb"
    newer.write_bytes(b"VALKEY080" + good.read_bytes()[9:])
    repo = _rebackup(settings, tmp_path, newer)
    _refused(tsettings, repo, target, "RDB format 80 (written by Valkey 9.0.0)")
    _refused(tsettings, repo, target, "reads RDB formats up to 11")


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_replica_of_the_restored_primary_resyncs_to_the_restored_data(
    valkey_factory, tmp_path, conf_instances
):
    source, settings, target, tsettings = backed_up(valkey_factory, tmp_path, conf_instances)
    replica = valkey_factory("replica", replicaof=f"127.0.0.1 {target.port}")
    link = lambda: replica.client().info("replication")["master_link_status"] == "up"  # noqa: E731
    _wait(link)
    assert replica.client().get("before-the-restore") == b"1"
    restore(LOCAL, tsettings, settings.repositories[0], None, "t3", lambda _: None)
    _wait(lambda: link() and replica.client().dbsize() == 300)
    assert replica.client().get("before-the-restore") is None
    assert same(dump_all(replica.client()), dump_all(source.client()))
