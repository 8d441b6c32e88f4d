"""`valkey-plans status`: one live view of every instance of an inventory.

Three layers, kept apart so each can be tested alone:

- parsing and arithmetic (no I/O): raw INFO / CLIENT LIST / CLUSTER INFO replies of two
  samples become an `InstanceStatus`; rates are taken over the interval between the two
  samples, never since the server started (a cache that was cold this morning and is
  warm now must show its hit ratio of now);
- sampling: every instance reached as verify and audit reach them
  (`verify.reach.instance_clients`: an SSH tunnel for SSH hosts, loopback on @local, the
  read-only `checks` user where the plan has ACLs), one pipelined round trip per sample,
  all instances in parallel so a refresh costs one round trip, not one per instance;
- rendering: a rich table (`--watch` refreshes it in place with rich.live), or JSON.

What a refresh sends to each instance (commands the `checks` ACL user may run):
`INFO memory stats replication cluster`, `CLIENT LIST`, and `CLUSTER INFO` on cluster
nodes. The first refresh also takes a baseline INFO; later refreshes of `--watch` use
the previous refresh's INFO as theirs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import valkey

from valkey_plans.client.settings import WORKLOADS
from valkey_plans.plan import Instance
from valkey_plans.verify.reach import instance_clients

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from valkey_plans.plan.inventory import Target

#: The client name status connects with: left out of the connection counts.
CLIENT_NAME = "valkey-plans:status"
INFO_SECTIONS = ("memory", "stats", "replication", "cluster")
#: Every command a refresh sends (the `checks` ACL user must be allowed each one).
COMMANDS = (("INFO", *INFO_SECTIONS), ("CLIENT", "LIST"), ("CLUSTER", "INFO"))
OTHER = "other"
DEFAULT_INTERVAL = 1.0


# --- parsing (no I/O) -------------------------------------------------------------------


def parse_info(text: str) -> dict[str, str]:
    """INFO's `field:value` lines (every section) as one flat mapping."""
    fields = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def parse_pairs(value: str) -> dict[str, str]:
    """`a=1,b=2` (INFO's slaveN lines) as a mapping."""
    return dict(part.partition("=")[::2] for part in value.split(",") if "=" in part)


@dataclass(frozen=True)
class Replica:
    """One replica as its primary's INFO replication lists it."""

    address: str
    state: str
    offset: int
    #: The primary's master_repl_offset minus this replica's acknowledged offset.
    lag_bytes: int


def parse_replicas(info: Mapping[str, str]) -> list[Replica]:
    """The `slaveN:` lines of a primary, each with its lag against master_repl_offset."""
    offset = int(info.get("master_repl_offset", 0))
    replicas = []
    count = int(info.get("connected_slaves", 0))
    for n in range(count):
        fields = parse_pairs(info.get(f"slave{n}", ""))
        if "offset" not in fields:
            continue
        seen = int(fields["offset"])
        address = f"{fields.get('ip', '?')}:{fields.get('port', '?')}"
        replicas.append(Replica(address, fields.get("state", "?"), seen, offset - seen))
    return replicas


def count_connections(client_list: str, app: str) -> dict[str, int]:
    """Connections per workload, by the client names `<app>:<workload>`; the rest is other.

    status's own connection (CLIENT_NAME) is not counted.
    """
    counts = {workload: 0 for workload in WORKLOADS} | {OTHER: 0}
    for line in client_list.splitlines():
        fields = dict(part.partition("=")[::2] for part in line.split(" ") if "=" in part)
        if "id" not in fields:
            continue
        name = fields.get("name", "")
        if name == CLIENT_NAME:
            continue
        prefix, _, workload = name.partition(":")
        key = workload if prefix == app and workload in WORKLOADS else OTHER
        counts[key] += 1
    return counts


def parse_cluster_state(cluster_info: str) -> str | None:
    """`cluster_state` of CLUSTER INFO (`ok` or `fail`)."""
    return parse_info(cluster_info).get("cluster_state")


# --- the snapshot (no I/O) ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What one round trip to one instance returned, and when it arrived."""

    at: float
    info: str
    #: Commands that round trip sent: they count in total_commands_processed between samples.
    sent: int = 1
    client_list: str | None = None
    cluster_info: str | None = None


@dataclass
class Replication:
    role: str | None
    offset: int | None
    #: master_link_status of a replica (`up`/`down`), None on a primary.
    link: str | None
    #: A primary: its largest replica lag; a replica: its own, from its primary's INFO.
    lag_bytes: int | None
    replicas: list[Replica] = field(default_factory=list)


@dataclass
class InstanceStatus:
    """One instance in one snapshot. Every measurement is None when it could not be taken."""

    host: str
    instance: str
    role: str
    #: Where other hosts reach it (as the primary's INFO lists its replicas).
    address: str
    error: str | None = None
    memory_used_bytes: int | None = None
    maxmemory_bytes: int | None = None
    memory_ratio: float | None = None
    ops_per_s: float | None = None
    hit_ratio: float | None = None
    evictions_per_s: float | None = None
    expirations_per_s: float | None = None
    connections: dict[str, int] | None = None
    replication: Replication | None = None
    cluster_state: str | None = None
    #: Age of the last good backup: backups are another issue; always None for now.
    backup_age_s: float | None = None


def _delta(before: Mapping[str, str], after: Mapping[str, str], key: str) -> int | None:
    if key not in before or key not in after:
        return None
    change = int(after[key]) - int(before[key])
    return change if change >= 0 else None  # a restart between the samples


def _per_s(change: int | None, seconds: float) -> float | None:
    return None if change is None or seconds <= 0 else change / seconds


def _replication(info: Mapping[str, str]) -> Replication:
    replicas = parse_replicas(info)
    role = info.get("role")
    if role == "slave":
        offset = info.get("slave_repl_offset")
        return Replication(
            role, int(offset) if offset else None, info.get("master_link_status"), None, replicas
        )
    offset = info.get("master_repl_offset")
    lag = max((r.lag_bytes for r in replicas), default=None)
    return Replication(role, int(offset) if offset else None, None, lag, replicas)


def instance_status(
    host: str, inst: Instance, app: str, before: Sample, after: Sample
) -> InstanceStatus:
    """The status of `inst` from two samples: rates over the time between them."""
    old, new = parse_info(before.info), parse_info(after.info)
    seconds = after.at - before.at
    hits, misses = _delta(old, new, "keyspace_hits"), _delta(old, new, "keyspace_misses")
    lookups = (hits or 0) + (misses or 0)
    commands = _delta(old, new, "total_commands_processed")
    used, limit = int(new.get("used_memory", 0)), int(new.get("maxmemory", 0))
    return InstanceStatus(
        host=host,
        instance=inst.name,
        role=inst.role,
        address=address_of(inst),
        memory_used_bytes=used,
        maxmemory_bytes=limit,
        memory_ratio=used / limit if limit else None,
        # status's own commands of the first sample are not the instance's load
        ops_per_s=_per_s(None if commands is None else max(0, commands - before.sent), seconds),
        hit_ratio=hits / lookups if hits is not None and lookups else None,
        evictions_per_s=_per_s(_delta(old, new, "evicted_keys"), seconds),
        expirations_per_s=_per_s(_delta(old, new, "expired_keys"), seconds),
        connections=count_connections(after.client_list, app) if after.client_list else None,
        replication=_replication(new),
        cluster_state=parse_cluster_state(after.cluster_info) if after.cluster_info else None,
    )


def address_of(inst: Instance) -> str:
    """ip:port other hosts reach `inst` at: what its primary's INFO names it by."""
    return f"{inst.peer_address or inst.client_address}:{inst.port}"


def link_replicas(statuses: Sequence[InstanceStatus]) -> None:
    """Give each replica its lag, as its primary (if in the snapshot) reports it."""
    lags = {
        replica.address: replica.lag_bytes
        for s in statuses
        if s.replication
        for replica in s.replication.replicas
    }
    for s in statuses:
        if s.replication and s.replication.role == "slave":
            s.replication.lag_bytes = lags.get(s.address)


@dataclass
class Snapshot:
    """Every instance of the inventory at one refresh; `to_dict()` is the JSON shape."""

    taken_at: datetime
    interval_s: float
    instances: list[InstanceStatus]

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "interval_s": self.interval_s,
            "instances": [_instance_dict(s) for s in self.instances],
        }

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.instances)


def _instance_dict(s: InstanceStatus) -> dict[str, Any]:
    data = asdict(s)
    memory = {k: data.pop(k) for k in ("memory_used_bytes", "maxmemory_bytes", "memory_ratio")}
    data["memory"] = {
        "used_bytes": memory["memory_used_bytes"],
        "max_bytes": memory["maxmemory_bytes"],
        "ratio": memory["memory_ratio"],
    }
    order = (
        "host",
        "instance",
        "role",
        "address",
        "error",
        "memory",
        "ops_per_s",
        "hit_ratio",
        "evictions_per_s",
        "expirations_per_s",
        "connections",
        "replication",
        "cluster_state",
        "backup_age_s",
    )
    return {key: data[key] for key in order}


# --- sampling (I/O) -----------------------------------------------------------------------


@dataclass
class Endpoint:
    """One planned instance and the connection status reaches it by (None: unreachable)."""

    host: str
    app: str
    inst: Instance
    client: valkey.Valkey | None
    error: str | None = None


def _raw(response: Any, **options: Any) -> str:
    return response.decode(errors="replace") if isinstance(response, bytes) else str(response)


@contextmanager
def endpoints(targets: Sequence[Target]) -> Iterator[list[Endpoint]]:
    """Open a connection (and tunnel) to every instance of `targets`, closed on exit.

    An instance that cannot be reached (tunnel, TLS-only, secrets) becomes an Endpoint
    with its error: the others are still shown.
    """
    with ExitStack() as stack:
        found = []
        for target in targets:
            for inst in target.plan.instances:
                app = target.plan.app.name
                try:
                    clients = stack.enter_context(
                        instance_clients(target.testinfra_url, target.plan, inst, name=CLIENT_NAME)
                    )
                except (OSError, ValueError, KeyError, valkey.ValkeyError) as exc:
                    found.append(Endpoint(target.name, app, inst, None, _error(exc)))
                    continue
                client = clients(0)
                stack.callback(client.close)  # before its tunnel closes
                client.set_response_callback("INFO", _raw)  # its own client: raw replies
                found.append(Endpoint(target.name, app, inst, client))
        yield found


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def take_sample(ep: Endpoint, full: bool) -> Sample:
    """One pipelined round trip: INFO, and for a full sample CLIENT LIST (+ CLUSTER INFO)."""
    assert ep.client is not None
    pipe = ep.client.pipeline(transaction=False)
    pipe.execute_command(*COMMANDS[0])
    if full:
        pipe.execute_command(*COMMANDS[1])
        if ep.inst.role == "cluster-node":
            pipe.execute_command(*COMMANDS[2])
    replies = [_raw(r) for r in pipe.execute()]
    at = time.monotonic()
    return Sample(at, replies[0], len(replies), *replies[1:])


class Status:
    """Refreshes of one set of endpoints; each refresh is one Snapshot.

    The first refresh takes a baseline, waits `interval`, and samples again; each later
    one uses the previous refresh's sample as its baseline (waiting out what is left of
    the interval), so `--watch` sends INFO once per refresh, not twice.
    """

    def __init__(self, eps: list[Endpoint], interval: float = DEFAULT_INTERVAL) -> None:
        self.endpoints = eps
        self.interval = interval
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(eps))))
        self._last: list[Sample | str] | None = None

    def _sample_all(self, full: bool) -> list[Sample | str]:
        def one(ep: Endpoint) -> Sample | str:
            if ep.client is None:
                return ep.error or "unreachable"
            try:
                return take_sample(ep, full)
            except (OSError, valkey.ValkeyError) as exc:
                return _error(exc)

        return list(self._pool.map(one, self.endpoints))

    def refresh(self) -> Snapshot:
        if self._last is None:
            self._last = self._sample_all(full=False)
        taken = [s.at for s in self._last if isinstance(s, Sample)]
        if taken:
            time.sleep(max(0.0, self.interval - (time.monotonic() - min(taken))))
        current = self._sample_all(full=True)
        pairs = zip(self.endpoints, self._last, current, strict=True)
        statuses = [self._status(ep, before, after) for ep, before, after in pairs]
        link_replicas(statuses)
        self._last = current
        return Snapshot(datetime.now(UTC), self.interval, statuses)

    @staticmethod
    def _status(ep: Endpoint, before: Sample | str, after: Sample | str) -> InstanceStatus:
        if isinstance(before, Sample) and isinstance(after, Sample):
            return instance_status(ep.host, ep.inst, ep.app, before, after)
        error = after if isinstance(after, str) else before
        assert isinstance(error, str)
        return InstanceStatus(ep.host, ep.inst.name, ep.inst.role, address_of(ep.inst), error)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


@contextmanager
def status_of(targets: Sequence[Target], interval: float = DEFAULT_INTERVAL) -> Iterator[Status]:
    """A Status over every instance of `targets`; connections and tunnels close on exit."""
    with endpoints(targets) as eps:
        status = Status(eps, interval)
        try:
            yield status
        finally:
            status.close()


def snapshot(targets: Sequence[Target], interval: float = DEFAULT_INTERVAL) -> Snapshot:
    """One snapshot of every instance: what `valkey-plans status --json` prints."""
    with status_of(targets, interval) as status:
        return status.refresh()


# --- rendering --------------------------------------------------------------------------


def _size(n: float) -> str:
    """Bytes in 4 characters or so (1.0K, 12.3M, 2.0G): a table cell, not a report."""
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _memory_cell(s: InstanceStatus) -> RenderableType:
    from rich.bar import Bar
    from rich.table import Table

    if s.memory_used_bytes is None:
        return "n/a"
    if not s.maxmemory_bytes:
        return f"{_size(s.memory_used_bytes)} (no limit)"
    cell = Table.grid(padding=(0, 1))
    share = min(s.memory_used_bytes, s.maxmemory_bytes)
    bar = Bar(size=s.maxmemory_bytes, begin=0, end=share, width=10, bgcolor="grey23")
    cell.add_row(bar, f"{_size(s.memory_used_bytes)}/{_size(s.maxmemory_bytes)}")
    return cell


def _connections_cell(s: InstanceStatus) -> str:
    if s.connections is None:
        return "n/a"
    shown = [f"{name} {n}" for name, n in s.connections.items() if n]
    return ", ".join(shown) or "none"


def _replication_cell(s: InstanceStatus) -> str:
    r = s.replication
    if r is None:
        return "n/a"
    if r.role == "slave":
        lag = "?" if r.lag_bytes is None else _size(r.lag_bytes)
        return f"link {r.link or '?'}, lag {lag}"
    if not r.replicas:
        return "-"
    return f"{len(r.replicas)} repl., lag {_size(r.lag_bytes or 0)}"


COLUMNS = (
    "instance",
    "role",
    "memory",
    "ops/s",
    "hit",
    "evict/s",
    "expire/s",
    "connections",
    "replication",
    "cluster",
    "backup",
)
RIGHT = {"ops/s", "hit", "evict/s", "expire/s"}


def table(snap: Snapshot) -> Table:
    """The snapshot as one rich table, one row per instance (HOST/INSTANCE)."""
    from rich.table import Table

    title = f"valkey-plans status {snap.taken_at:%H:%M:%S} UTC, rates over {snap.interval_s:g} s"
    out = Table(title=title, expand=False, pad_edge=False)
    for name in COLUMNS:
        out.add_column(name, justify="right" if name in RIGHT else "left")
    for s in snap.instances:
        where = f"{s.host}/{s.instance}"
        if s.error:
            out.add_row(where, s.role, f"[red]{s.error}[/red]", *["n/a"] * (len(COLUMNS) - 3))
            continue
        hit = "n/a" if s.hit_ratio is None else f"{s.hit_ratio:.1%}"
        out.add_row(
            where,
            s.role,
            _memory_cell(s),
            _rate(s.ops_per_s),
            hit,
            _rate(s.evictions_per_s),
            _rate(s.expirations_per_s),
            _connections_cell(s),
            _replication_cell(s),
            s.cluster_state or "n/a",
            "n/a",
        )
    return out


def console() -> Console:
    """A rich console; one wide enough for the table when stdout is a file or a pipe."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def watch(
    targets: Sequence[Target],
    interval: float,
    out: Console | None = None,
    refreshes: int | None = None,
) -> None:
    """Refresh the table in place until Ctrl-C (or after `refreshes` refreshes)."""
    from rich.live import Live

    with status_of(targets, interval) as status:
        try:
            with Live(
                table(status.refresh()), console=out or console(), auto_refresh=False
            ) as live:
                done = 1
                while refreshes is None or done < refreshes:
                    live.update(table(status.refresh()), refresh=True)
                    done += 1
        except KeyboardInterrupt:
            pass  # Ctrl-C is how --watch ends
