"""The plan: one validated model of what Valkey should look like on a host.

The deploy, the templates, the client settings and the checks all read this model,
so a value is written once (in the inventory's host/group data, or as a default) and
never restated. Every default lives in `valkey_plans.plan.defaults` (the cache db map
in the client's schema); README's "Plan settings" documents them. Each kind of value
has its rule in `valkey_plans.plan.values`; the fields below only say which rule
applies. Validation happens before pyinfra runs a single operation, and its errors
name the host, the field, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from valkey_plans.client.schema import CACHE_DB_NAMES, CACHE_DBS, MAX_DATABASES, MAX_TTL
from valkey_plans.domains import DOMAINS
from valkey_plans.plan import adoption
from valkey_plans.plan import values as rule
from valkey_plans.plan.backup import Backup
from valkey_plans.plan.defaults import (
    DEFAULTS,
    HOSTED_DEFAULTS,
    INSTANCE_DEFAULTS,
    ROLE_DEFAULTS,
    SENTINEL_DEFAULTS,
    TLS_DEFAULTS,
)
from valkey_plans.plan.layout import DEBIAN, InstancePaths
from valkey_plans.plan.versions import check_version

Role = Literal["cache", "primary", "replica", "cluster-node"]
Policy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]
LogLevel = Literal["debug", "verbose", "notice", "warning", "nothing"]
AppendFsync = Literal["always", "everysec", "no"]

# One annotated type per kind of value: the field says the kind, values.py the rule.
Port = Annotated[int, AfterValidator(rule.port)]
Name = Annotated[str, AfterValidator(rule.name)]
Reference = Annotated[str, AfterValidator(rule.reference)]
HostPath = Annotated[str, AfterValidator(rule.path)]

#: The cluster bus of a cluster node listens on its port + 10000.
CLUSTER_BUS_OFFSET = 10000
HYPHENATED = {"maxmemory_policy": "maxmemory-policy", "maxmemory_samples": "maxmemory-samples"}
_APP = DEFAULTS["valkey_app"]
_EXPORTER = DEFAULTS["valkey_exporter"]
#: The exporter's telemetry path (its default, never changed by the deploy).
METRICS_PATH = "/metrics"


class PlanError(ValueError):
    """A plan that cannot be deployed; the message lists every problem, one per line."""


class _Strict(BaseModel):
    # strict: a bool is not port 1 and "6379" is not a port; every value has its own type.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


class CacheDb(_Strict):
    """One db of the cache role: its number and, where it applies, its bound and TTL."""

    db: int = Field(ge=0, le=MAX_DATABASES - 1)
    cap: int | None = Field(default=None, ge=1, le=1_000_000)
    ttl: int | None = Field(default=None, ge=1, le=MAX_TTL, description="seconds")
    sliding: bool = False


class Tls(_Strict):
    """TLS for one instance; certificate paths are on the host, readable by valkey."""

    port: Port
    cert_file: HostPath
    key_file: HostPath
    ca_cert_file: HostPath
    auth_clients: Literal["yes", "no", "optional"] = TLS_DEFAULTS["auth_clients"]
    #: Turn the plain-text port off, so every client must use TLS.
    only: bool = TLS_DEFAULTS["only"]


def _default_cache_dbs() -> dict[str, CacheDb]:
    """The cache db map of the client's schema (`CACHE_DBS`): one declaration for both."""
    return {name: CacheDb(**asdict(spec)) for name, spec in CACHE_DBS.items()}


class Instance(_Strict):
    """One Valkey server process: a systemd unit `valkey-server@NAME` and its config file.

    Fields without a default here get theirs from INSTANCE_DEFAULTS and the role's
    ROLE_DEFAULTS, merged under what the plan writes (`_merge_role_defaults`).
    """

    name: Name
    role: Role
    bind: Annotated[list[str], AfterValidator(rule.instance_binds)]
    port: Port
    maxmemory: Annotated[str, BeforeValidator(rule.maxmemory)]
    maxmemory_policy: Policy = Field(alias="maxmemory-policy")
    maxmemory_samples: Annotated[int, AfterValidator(rule.samples)] = Field(
        alias="maxmemory-samples"
    )
    databases: int = Field(ge=1, le=MAX_DATABASES)
    save: Annotated[list[str], AfterValidator(rule.save_rules)]
    appendonly: bool
    appendfsync: AppendFsync
    loglevel: LogLevel
    extra_config: Annotated[dict[str, str | int], AfterValidator(rule.extra_config)]
    tls: Tls | None = None
    cache_dbs: dict[str, CacheDb] = Field(default_factory=_default_cache_dbs)
    #: role replica: the primary it follows, as "INVENTORY_HOST/INSTANCE".
    replicaof: Reference | None = None
    #: role cluster-node: the name of the Valkey Cluster it belongs to.
    cluster: Name | None = None
    #: Address other hosts reach this instance at (default: first non-loopback bind).
    announce_ip: Annotated[str, AfterValidator(rule.announce_ip)] | None = None
    cluster_node_timeout: int = Field(ge=500, le=600_000, description="ms")
    #: A running Redis this instance takes over (README "Coming from Redis").
    adopt: adoption.Adopt | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_role_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        # Users may write Valkey's spelling (maxmemory-policy) or Python's (maxmemory_policy).
        given = {HYPHENATED.get(key, key): value for key, value in data.items()}
        # An unknown role is reported by the role Literal alone, naming the allowed roles;
        # the primary's defaults only keep that message from drowning in "Field required".
        role_defaults = ROLE_DEFAULTS.get(given.get("role"), ROLE_DEFAULTS["primary"])
        return {**INSTANCE_DEFAULTS, **role_defaults, **given}

    @model_validator(mode="after")
    def _role_rules(self) -> Instance:
        if self.role == "cache":
            if self.databases < len(CACHE_DB_NAMES):
                raise ValueError(
                    f"databases = {self.databases}: a cache instance needs at least"
                    f" {len(CACHE_DB_NAMES)} ({', '.join(CACHE_DB_NAMES)}); allowed:"
                    f" {len(CACHE_DB_NAMES)} to {MAX_DATABASES}"
                )
            missing = set(CACHE_DB_NAMES) - set(self.cache_dbs)
            extra = set(self.cache_dbs) - set(CACHE_DB_NAMES)
            if missing or extra:
                raise ValueError(
                    f"cache_dbs = {sorted(self.cache_dbs)}: allowed: exactly"
                    f" {', '.join(CACHE_DB_NAMES)}"
                )
            numbers = [d.db for d in self.cache_dbs.values()]
            if len(set(numbers)) != len(numbers) or max(numbers) >= self.databases:
                raise ValueError(
                    f"cache_dbs numbers {numbers}: allowed: distinct db numbers below"
                    f" databases ({self.databases})"
                )
        elif self.role == "replica" and not (self.replicaof and "/" in self.replicaof):
            raise ValueError(
                f"replicaof = {self.replicaof!r}: a replica names its primary; allowed:"
                " 'INVENTORY_HOST/INSTANCE' of a primary instance"
            )
        elif self.role == "cluster-node" and not self.cluster:
            raise ValueError(
                f"cluster: a cluster-node names its cluster; allowed: {rule.NAME_RULE}"
            )
        if self.replicaof and self.role != "replica":
            raise ValueError(
                f"replicaof: only a replica follows a primary, not a {self.role}; allowed:"
                " replicaof on role replica only"
            )
        if self.cluster and self.role != "cluster-node":
            raise ValueError(
                f"cluster: only a cluster-node joins a cluster, not a {self.role}; allowed:"
                " cluster on role cluster-node only"
            )
        if self.role in ("replica", "cluster-node") and not self.peer_address:
            raise ValueError(
                f"bind = {self.bind}: a {self.role} must be reachable from other hosts;"
                " allowed: a non-loopback address in bind (or announce_ip)"
            )
        if self.role != "cache" and self.databases != 1:
            raise ValueError(
                f"databases = {self.databases}: a {self.role} instance has db 0 only;"
                " allowed: 1 (applications never SELECT, and Valkey Cluster has one db)"
            )
        return self

    @property
    def unit(self) -> str:
        return f"valkey-server@{self.name}.service"

    @property
    def tunables(self) -> dict[str, str]:
        """Deploy defaults (tcp-keepalive, lazyfree-*...) with the plan's overrides."""
        given = {k: str(v) for k, v in self.extra_config.items() if k in rule.TUNABLE_DIRECTIVES}
        return {**rule.TUNABLE_DIRECTIVES, **given}

    @property
    def extra_directives(self) -> dict[str, str]:
        """extra_config beyond the tunables: written once each, after the deploy's own."""
        return {k: str(v) for k, v in self.extra_config.items() if k not in rule.TUNABLE_DIRECTIVES}

    @property
    def cluster_bus_port(self) -> int | None:
        """The cluster bus (port + 10000) of a cluster node; None for other roles."""
        return self.port + CLUSTER_BUS_OFFSET if self.role == "cluster-node" else None

    @property
    def paths(self) -> InstancePaths:
        """Files of this instance on a Debian-family host (the checks' view)."""
        return DEBIAN.paths(self.name)

    @property
    def maxmemory_bytes(self) -> int:
        """maxmemory as Valkey reports it in CONFIG GET (1k = 1000, 1kb = 1024)."""
        return rule.memory_bytes(self.maxmemory)

    @property
    def ports(self) -> list[int]:
        """Every TCP port clients reach the instance on (plain and TLS)."""
        plain = [] if self.tls and self.tls.only else [self.port]
        return plain + ([self.tls.port] if self.tls else [])

    @property
    def taken_ports(self) -> list[int]:
        """Every port the instance holds: the plain port even when TLS-only (it is
        written as `port 0` then, but the plan reserves it), TLS, the cluster bus."""
        bus = [self.cluster_bus_port] if self.cluster_bus_port else []
        return [self.port] + ([self.tls.port] if self.tls else []) + bus

    @property
    def client_port(self) -> int:
        """The port applications use: TLS when the plan has it."""
        return self.tls.port if self.tls else self.port

    @property
    def peer_address(self) -> str | None:
        """Where other hosts (replicas, cluster peers, sentinels) reach this instance."""
        if self.announce_ip:
            return self.announce_ip
        for address in self.bind:
            ip = ipaddress.ip_address(address.removeprefix("-").partition("%")[0])
            if not ip.is_loopback and not ip.is_unspecified:
                return str(ip)
        return None

    @property
    def loopback_only(self) -> bool:
        return all(rule.is_loopback(a) for a in self.bind)

    @property
    def client_address(self) -> str:
        """Where a client on this host reaches the instance (loopback if bound to all)."""
        first = self.bind[0].removeprefix("-")
        return "127.0.0.1" if first in ("0.0.0.0", "::", "127.0.0.1") else first

    def db(self, name: str) -> CacheDb:
        """The cache db called `name` (user_index, user_cache, ...)."""
        return self.cache_dbs[name]


Workload = Literal["api", "blocking", "subscriber", "background"]
ServiceUser = Annotated[str, AfterValidator(rule.service_user)]


class Hosted(_Strict):
    """An external hosted tier (a managed Valkey service) this plan does not deploy.

    Only where it is, how to trust it and how to log in: the passwords come from the
    secrets (`hosted`, or `hosted_<workload>` with `login: per-workload`), never the plan.
    """

    url: Annotated[str, AfterValidator(rule.hosted_url)]
    mode: Literal["standalone", "cluster"] = HOSTED_DEFAULTS["mode"]
    seeds: Annotated[list[str], AfterValidator(rule.seeds)] = Field(
        default_factory=lambda: list(HOSTED_DEFAULTS["seeds"])
    )
    tls_ca_file: Annotated[str, AfterValidator(rule.ca_file)] = HOSTED_DEFAULTS["tls_ca_file"]
    tls_server_name: Annotated[str, AfterValidator(rule.server_name)] | None = HOSTED_DEFAULTS[
        "tls_server_name"
    ]
    login: Literal["token", "user", "per-workload"] = HOSTED_DEFAULTS["login"]
    user: ServiceUser | None = HOSTED_DEFAULTS["user"]
    users: dict[Workload, ServiceUser] = Field(
        default_factory=lambda: dict(HOSTED_DEFAULTS["users"])
    )

    @model_validator(mode="after")
    def _consistent(self) -> Hosted:
        """Settings that only make sense together: each refusal says which one to change."""
        if not self.tls and (self.tls_ca_file != "system" or self.tls_server_name):
            shown = self.tls_server_name if self.tls_ca_file == "system" else self.tls_ca_file
            field = "tls_ca_file" if self.tls_ca_file != "system" else "tls_server_name"
            raise ValueError(
                f"{field} = {shown!r} with url = {self.url!r} (no TLS); allowed: a valkeys://"
                f" url, or no {field}"
            )
        if self.tls_server_name and self.mode == "cluster":
            raise ValueError(
                f"tls_server_name = {self.tls_server_name!r} with mode = 'cluster'; allowed: no"
                " tls_server_name (cluster clients check each node's certificate by its address)"
            )
        if self.seeds and self.mode != "cluster":
            raise ValueError(
                f"seeds = {self.seeds!r} with mode = {self.mode!r}; allowed: mode 'cluster',"
                " or no seeds"
            )
        if (self.login == "user") != (self.user is not None):
            raise ValueError(
                f"user = {self.user!r} with login = {self.login!r}; allowed: login 'user' with"
                " a user, or login 'token'/'per-workload' without one"
            )
        if self.login == "per-workload" and set(self.users) != set(HOSTED_DEFAULTS["users"]):
            raise ValueError(
                f"users = {self.users!r}; allowed: a user for each of api, blocking,"
                " subscriber, background"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.url.startswith("valkeys://")


class App(_Strict):
    """What applications on this host are told: the env file's inputs."""

    name: Name = _APP["name"]
    env_dir: Annotated[str, AfterValidator(rule.settings_dir)] = _APP["env_dir"]
    group: Annotated[str, AfterValidator(rule.posix_name)] = _APP["group"]
    hosted_instance: Name | None = _APP["hosted_instance"]
    hosted_url: Annotated[str, AfterValidator(rule.hosted_url)] | None = _APP["hosted_url"]
    hosted: Hosted | None = _APP["hosted"]
    cache_instance: Name | None = _APP["cache_instance"]

    def hosted_ca_path(self, env_dir: str | None = None) -> str | None:
        """Where the deploy installs the external hosted tier's CA file on the app host:
        beside the settings (`env_dir`, by default the plan's), None with system CAs."""
        if self.hosted is None or self.hosted.tls_ca_file == "system":
            return None
        return f"{env_dir or self.env_dir}/{self.name}-hosted-ca.pem"


def _pattern_db(pattern: str) -> int:
    """The db of an exporter key pattern: N of `dbN=...`, else 0."""
    prefix, equals, _ = pattern.partition("=")
    return int(prefix[2:]) if equals else 0


class Exporter(_Strict):
    """Debian's prometheus-redis-exporter, one per instance (README "Metrics")."""

    enabled: bool = _EXPORTER["enabled"]
    #: Address /metrics listens on.
    listen: Annotated[str, AfterValidator(rule.announce_ip)] = _EXPORTER["listen"]
    #: An instance's exporter port is its port + this.
    port_offset: int = Field(default=_EXPORTER["port_offset"], ge=1, le=60000)
    #: Key globs whose sizes it reports ("db1=usr:*"), read-only ACL key rules as well.
    key_patterns: Annotated[list[str], AfterValidator(rule.key_patterns)] = Field(
        default_factory=lambda: list(_EXPORTER["key_patterns"])
    )

    @property
    def loopback_only(self) -> bool:
        return rule.is_loopback(self.listen)

    def url(self, inst: Instance) -> str:
        """Where the exporter of `inst` serves /metrics."""
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"http://{host}:{inst.port + self.port_offset}{METRICS_PATH}"

    def patterns_for(self, inst: Instance) -> list[str]:
        """The key patterns of dbs that `inst` has: a primary (db 0 only) skips `db1=...`,
        which its exporter could not SELECT."""
        return [p for p in self.key_patterns if _pattern_db(p) < inst.databases]

    def serves(self, inst: Instance) -> bool:
        """Whether `inst` gets an exporter: not a TLS-only instance, whose loopback
        certificate name the exporter could not verify (README "Metrics")."""
        return self.enabled and not (inst.tls and inst.tls.only)


class Sentinel(_Strict):
    """Valkey Sentinel on this host, watching one primary and its replicas."""

    #: Name Sentinel knows the group by (clients ask for it).
    name: Name = SENTINEL_DEFAULTS["name"]
    #: The watched primary, as "INVENTORY_HOST/INSTANCE".
    primary: Reference
    port: Port = SENTINEL_DEFAULTS["port"]
    #: Address other sentinels and clients reach this sentinel at.
    bind: Annotated[list[str], AfterValidator(rule.binds)]
    quorum: int = Field(default=SENTINEL_DEFAULTS["quorum"], ge=1, le=100)
    down_after_ms: int = Field(default=SENTINEL_DEFAULTS["down_after_ms"], ge=100, le=3_600_000)
    failover_timeout_ms: int = Field(
        default=SENTINEL_DEFAULTS["failover_timeout_ms"], ge=1000, le=86_400_000
    )

    @property
    def address(self) -> str:
        """Where other sentinels and clients reach this one: its first non-loopback bind."""
        addresses = [a.removeprefix("-") for a in self.bind]
        outside = [a for a in addresses if not rule.is_loopback(a)]
        return (outside or addresses)[0]

    @property
    def loopback_only(self) -> bool:
        return all(rule.is_loopback(a) for a in self.bind)


class Alerts(_Strict):
    """Thresholds of the alert rules (`valkey_plans.plan.alerts`); unset keys keep DEFAULTS."""

    hit_ratio_min: float = Field(ge=0, le=1)
    replication_lag_max_bytes: int = Field(ge=1, le=1 << 40)
    primary_memory_max_ratio: float = Field(gt=0, le=1)
    #: At least a minute (a scrape or two), at most a year.
    backup_max_age_s: int | None = Field(ge=60, le=31_536_000)
    rejected_connections: int = Field(ge=0, le=1_000_000_000)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        # A plan that sets one threshold keeps the documented defaults of the others.
        if not isinstance(data, Mapping):
            return data
        return {**DEFAULTS["valkey_alerts"], **data}


class Plan(_Strict):
    """Everything the deploy, the clients and the checks need to know about one host.

    Its fields have no defaults here: `from_host_data` fills every key from DEFAULTS.
    """

    host: Annotated[str, AfterValidator(rule.host_name)]
    #: Where other hosts reach this one: its `ssh_hostname`, else the inventory name (a
    #: backup host's repositories are served there; checked there, `backup_host_problems`).
    address: str
    instances: list[Instance] = Field(alias="valkey_instances")
    domains: Annotated[list[str], AfterValidator(rule.domain_codes)] = Field(alias="valkey_domains")
    custom_domains: Annotated[dict[str, str], AfterValidator(rule.custom_domains)] = Field(
        alias="valkey_custom_domains"
    )
    app: App = Field(alias="valkey_app")
    cluster_replicas: int = Field(alias="valkey_cluster_replicas", ge=0, le=5)
    sentinel: Sentinel | None = Field(alias="valkey_sentinel")
    acl: bool = Field(alias="valkey_acl")
    secrets_file: Annotated[str, AfterValidator(rule.secrets_file)] | None = Field(
        alias="valkey_secrets_file"
    )
    secrets_generate: bool = Field(alias="valkey_secrets_generate")
    version: Annotated[str | None, AfterValidator(check_version)] = Field(alias="valkey_version")
    debian_mirror: Annotated[str, AfterValidator(rule.mirror)] = Field(alias="valkey_debian_mirror")
    apt_cache_time: int = Field(alias="valkey_apt_cache_time", ge=0)
    alerts: Alerts = Field(alias="valkey_alerts")
    exporter: Exporter = Field(alias="valkey_exporter")
    backup: Backup = Field(alias="valkey_backup")

    @model_validator(mode="after")
    def _cross_checks(self) -> Plan:
        known = {**DOMAINS, **self.custom_domains}
        unknown = [d for d in self.domains if d not in known]
        if unknown:
            raise ValueError(
                f"valkey_domains: unknown domain {', '.join(map(repr, unknown))}; allowed:"
                f" {', '.join(sorted(known))}, or declare it in valkey_custom_domains"
            )
        self._unique_names_and_ports()
        adoption.check(self)
        exposed = [i.name for i in self.instances if not i.loopback_only]
        if self.sentinel and not self.sentinel.loopback_only:
            exposed.append("sentinel")
        if exposed and not self.acl:
            raise ValueError(
                f"valkey_instances {exposed} bind beyond loopback without passwords; allowed:"
                " loopback only, or valkey_acl: true with passwords (valkey_secrets_file or"
                " VALKEY_PLANS_SECRET_<USER>)"
            )
        names = {i.name: i for i in self.instances}
        for field in ("hosted_instance", "cache_instance"):
            ref = getattr(self.app, field)
            if ref is not None and ref not in names:
                raise ValueError(
                    f"valkey_app.{field} = {ref!r}: allowed: one of this host's instances"
                    f" ({', '.join(names) or 'none'})"
                )
        if self.app.cache_instance and names[self.app.cache_instance].role != "cache":
            raise ValueError(
                f"valkey_app.cache_instance = {self.app.cache_instance!r}: allowed: an"
                " instance with role cache"
            )
        unknown = [n for n in self.backup.instances or [] if n not in names]
        if unknown:
            raise ValueError(
                f"valkey_backup.instances: no instance {', '.join(map(repr, unknown))} here;"
                f" allowed: this host's instances ({', '.join(names) or 'none'})"
            )
        chosen = [f for f in ("hosted_instance", "hosted_url", "hosted") if getattr(self.app, f)]
        if len(chosen) > 1:
            raise ValueError(
                f"valkey_app: {' and '.join(chosen)} each name the hosted tier; allowed: one of"
                " hosted_instance, hosted_url, hosted"
            )
        return self

    def _unique_names_and_ports(self) -> None:
        """One instance per name; one owner per port (plain, TLS, cluster bus, sentinel)."""
        names: set[str] = set()
        for inst in self.instances:
            if inst.name in names:
                raise ValueError(
                    f"valkey_instances: two instances with name {inst.name!r}; allowed:"
                    " one instance per name on a host"
                )
            names.add(inst.name)
        owners: dict[int, str] = {}
        taken = [(inst.name, port) for inst in self.instances for port in inst.taken_ports]
        if self.sentinel:
            taken.append(("sentinel", self.sentinel.port))
        taken += [(f"{inst} exporter", port) for inst, port in self.exporter_ports.items()]
        for owner, port in taken:
            if port > 65535 and owner.endswith(" exporter"):
                raise ValueError(
                    f"valkey_exporter.port_offset = {self.exporter.port_offset}: the exporter"
                    f" of {owner.removesuffix(' exporter')} would listen on {port}; allowed:"
                    " an offset that keeps every instance port + offset at most 65535"
                )
            if port > 65535:
                raise ValueError(
                    f"valkey_instances[{owner}]: cluster bus port {port} (port + 10000) is above"
                    " 65535; allowed: a cluster-node port up to 55535"
                )
            if port in owners and owner.endswith(" exporter"):
                raise ValueError(
                    f"valkey_exporter.port_offset = {self.exporter.port_offset}: the exporter of"
                    f" {owner.removesuffix(' exporter')} (port {port}) clashes with"
                    f" {owners[port]}; allowed: an offset whose exporter"
                    " ports (instance port + offset) no instance, TLS, cluster bus or"
                    " sentinel port uses"
                )
            if port in owners:
                what = "two instances with port" if owner != "sentinel" else "sentinel port"
                raise ValueError(
                    f"valkey_instances: {what} {port}; allowed: one instance per port on a host"
                    f" ({owners[port]} and {owner} clash, counting TLS ports and cluster bus"
                    " ports = port + 10000)"
                )
            owners[port] = owner

    def instance(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(f"no instance {name!r} in the plan of {self.host}")

    @property
    def exported(self) -> list[Instance]:
        """The instances that get an exporter (none when exporters are off)."""
        return [i for i in self.instances if self.exporter.serves(i)]

    @property
    def exporter_ports(self) -> dict[str, int]:
        """The port of each exported instance's exporter, by instance name."""
        return {i.name: i.port + self.exporter.port_offset for i in self.exported}

    @property
    def replication(self) -> bool:
        """Whether instances here replicate (and so need the `replica` ACL user)."""
        return self.sentinel is not None or any(
            i.role in ("replica", "cluster-node") or i.role == "primary" and i.peer_address
            for i in self.instances
        )

    @property
    def all_domains(self) -> dict[str, str]:
        """The declared domains with their descriptions, custom ones included."""
        known = {**DOMAINS, **self.custom_domains}
        return {code: known[code] for code in self.domains}

    @classmethod
    def from_host_data(cls, host: str, data: Mapping[str, Any] | Any) -> Plan:
        """Build the plan from pyinfra host data (a dict or pyinfra's HostData)."""
        get = data.get if hasattr(data, "get") else lambda k, d=None: getattr(data, k, d)
        unknown = unknown_settings(data)
        if unknown:
            shown = shown_host(host)
            raise PlanError("invalid plan\n" + "\n".join(f"host {shown}: {u}" for u in unknown))
        raw: dict[str, Any] = {"host": host, "address": get("ssh_hostname", None) or host}
        for key, default in DEFAULTS.items():
            value = get(key, None)
            raw[key] = default if value is None else value
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise PlanError(format_errors(host, raw, exc)) from None


#: What pydantic's own type errors mean in a plan, said the plan's way.
TYPE_RULES = {
    "int_type": "allowed: an integer (not a bool, a float or a string)",
    "int_from_float": "allowed: an integer (not a float)",
    "float_type": "allowed: a number (not a bool or a string)",
    "bool_type": "allowed: true or false (not a number or a string)",
    "string_type": "allowed: a string",
    "list_type": "allowed: a list",
    "dict_type": "allowed: a mapping",
    "model_type": "allowed: a mapping",
    "missing": "missing; allowed: a value for it (README 'Plan settings' says which)",
}


def unknown_settings(data: Mapping[str, Any] | Any) -> list[str]:
    """valkey_* keys the plan does not know: a typo would otherwise be silently ignored."""
    if hasattr(data, "dict"):
        keys = list(data.dict())
    elif isinstance(data, Mapping):
        keys = list(data)
    else:
        keys = list(vars(data))
    problems = []
    for key in sorted(k for k in keys if isinstance(k, str) and k.startswith("valkey_")):
        if key in DEFAULTS:
            continue
        close = difflib.get_close_matches(key, DEFAULTS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{key}: unknown setting{hint}; allowed: {', '.join(sorted(DEFAULTS))}")
    return problems


def _field_path(raw: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's location into the names a user wrote: valkey_instances[cache].port."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            entry = node[item] if item < len(node) else None
            label = entry.get("name") if isinstance(entry, Mapping) else None
            # A name that breaks the rules is shown by position: it may hold a newline.
            if not (isinstance(label, str) and rule.NAME.fullmatch(label)):
                label = item
            parts[-1] += f"[{label}]"
            node = entry
            continue
        if isinstance(item, str) and item.startswith(("function-", "literal[")):
            continue
        parts.append(str(item))
        node = node.get(item) if isinstance(node, Mapping) else None
    return ".".join(parts)


def shown_host(host: str) -> str:
    """The host as an error line names it: quoted when it is not a plain host name."""
    return host if rule.HOST_NAME.fullmatch(host) else repr(host)


def format_errors(host: str, raw: Mapping[str, Any], exc: ValidationError) -> str:
    host = shown_host(host)
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = _field_path(raw, loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in TYPE_RULES:
            message = TYPE_RULES[err["type"]]
        elif message.startswith("Input should be "):
            message = "allowed: " + message.removeprefix("Input should be ")
        if err["type"] == "literal_error":
            message = f"allowed: one of {err['ctx']['expected']}"
        elif err["type"] == "extra_forbidden":
            message = "unknown setting; allowed: the settings listed in README 'Plan settings'"
        value = err.get("input")
        shown = "" if isinstance(value, Mapping) else f" = {value!r}"
        where = f"{field}{shown}: " if field else ""
        lines.append(f"host {host}: {where}{message}")
    return "invalid plan\n" + "\n".join(lines)
