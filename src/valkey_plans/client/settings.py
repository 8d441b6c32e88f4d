"""Connection settings for applications, from the environment or the env file the deploy renders.

The variable names are the ones Node.js/iovalkey code of the same team already reads
(VALKEY_HOST, VALKEY_PORT, ...), so one rendered file serves both languages. A "tier"
is one Valkey endpoint with a user per workload: the hosted tier uses the `VALKEY_`
prefix, the local cache tier the same names under `VALKEY_CACHE_` plus its db map and
bounds. Field names map 1:1 to variable names (`port` <- `<PREFIX>PORT`), so there is
one model and one reader, not a copy per tier.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from valkey_plans.client.schema import CACHE_DB_NAMES, CACHE_DBS

Workload = Literal["api", "blocking", "subscriber", "background"]
WORKLOADS: tuple[Workload, ...] = ("api", "blocking", "subscriber", "background")

HOSTED_PREFIX = "VALKEY_"
CACHE_PREFIX = "VALKEY_CACHE_"
ENV_FILE_VARIABLE = "VALKEY_ENV_FILE"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _zero_or_one(value: object) -> object:
    """The env file says 0/1 (what iovalkey code reads too); anything else is a typo."""
    if isinstance(value, str):
        flags = {"0": False, "1": True, "false": False, "true": True}
        if value.strip().lower() not in flags:
            raise ValueError("must be 0 or 1")
        return flags[value.strip().lower()]
    return value


#: A 0/1 switch in the env file.
Flag = Annotated[bool, BeforeValidator(_zero_or_one)]


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each variable and what is allowed."""


class Credentials(BaseModel):
    """One workload's login: no user means the default user; the password stays a SecretStr."""

    model_config = ConfigDict(frozen=True)

    user: str | None = None
    password: SecretStr | None = None


def _pairs(addresses: str | None) -> list[tuple[str, int]]:
    """ "HOST:PORT,HOST:PORT,..." as (host, port) pairs."""
    pairs = (item.rsplit(":", 1) for item in (addresses or "").split(",") if item)
    return [(host, int(port)) for host, port in pairs]


class TierSettings(BaseModel):
    """One Valkey endpoint (hosted or local cache) and the login of each workload on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app: str = Field("app", pattern=_NAME, description="prefix of every client name")
    host: str = Field("127.0.0.1", min_length=1, pattern=r"^\S+$")
    port: int = Field(6379, ge=1, le=65535)
    tls: Flag = False
    tls_ca_file: Path | None = None
    #: The name the server's certificate carries when it is not `host` (SNI and the
    #: hostname check), as managed services behind a load balancer's address need.
    tls_servername: str | None = Field(None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    db: int = Field(0, ge=0, le=15)
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    #: Sentinel mode: "HOST:PORT,HOST:PORT,..." of the sentinels, the group's name, and
    #: the sentinels' password.
    sentinels: str | None = Field(None, pattern=r"^[^\s,:]+:\d+(,[^\s,:]+:\d+)*$")
    #: Cluster mode: "HOST:PORT,HOST:PORT,..." of every node, to start from when the
    #: node at host:port is down (the client learns the rest from any one of them).
    cluster_nodes: str | None = Field(None, pattern=r"^[^\s,:]+:\d+(,[^\s,:]+:\d+)*$")
    #: Seconds one TCP connect may take before the attempt counts as failed: short, so a
    #: vanished host costs one such wait per attempt, not the kernel's minutes.
    connect_timeout: float = Field(1.0, gt=0, le=60, allow_inf_nan=False)
    #: Seconds an api command may wait for its reply: a call in flight to a host that
    #: stops answering (no reset, no refusal) waits this long before the client learns
    #: of it, so keep it below the failover time the team plans for.
    command_timeout: float = Field(5.0, gt=0, le=600, allow_inf_nan=False)
    #: Seconds a call keeps riding out a lost connection (reconnects with backoff, a
    #: Sentinel or cluster failover, the cluster's topology refresh) before the error
    #: reaches the application. Set it to the failover time the team plans for.
    retry_budget: float = Field(10.0, ge=0, le=600, allow_inf_nan=False)
    sentinel_name: str = Field("main", pattern=r"^\S+$")
    sentinel_password: SecretStr | None = None
    api_user: str | None = Field(None, pattern=r"^\S+$")
    api_password: SecretStr | None = None
    blocking_user: str | None = Field(None, pattern=r"^\S+$")
    blocking_password: SecretStr | None = None
    subscriber_user: str | None = Field(None, pattern=r"^\S+$")
    subscriber_password: SecretStr | None = None
    background_user: str | None = Field(None, pattern=r"^\S+$")
    background_password: SecretStr | None = None

    #: Fields read without the tier prefix when the tier does not set them itself.
    INHERITED: ClassVar[tuple[str, ...]] = ()

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file; give the path of a readable PEM CA bundle")
        return value

    @model_validator(mode="after")
    def _cluster_uses_db_zero(self) -> Self:
        if self.mode == "cluster" and self.db != 0:
            raise ValueError(f"{{prefix}}MODE=cluster has only db 0, but {{prefix}}DB={self.db}")
        if (self.tls_servername or self.tls_ca_file) and not self.tls:
            raise ValueError(
                "{prefix}TLS_CA_FILE/{prefix}TLS_SERVERNAME need {prefix}TLS=1 (without TLS"
                " there is no certificate to check)"
            )
        if self.tls_servername and self.mode == "cluster":
            raise ValueError(
                "{prefix}TLS_SERVERNAME with {prefix}MODE=cluster: the cluster client checks"
                " each node's certificate against the node's own address; unset it"
            )
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError(
                "{prefix}MODE=sentinel needs {prefix}SENTINELS (HOST:PORT,HOST:PORT,...)"
            )
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs."""
        return _pairs(self.sentinels)

    @property
    def cluster_addresses(self) -> list[tuple[str, int]]:
        """The cluster's nodes as (host, port) pairs (empty when not given)."""
        return _pairs(self.cluster_nodes)

    def credentials(self, workload: Workload) -> Credentials:
        """The login of one workload (its own ACL user, or the default user)."""
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; allowed: {', '.join(WORKLOADS)}")
        return Credentials(
            user=getattr(self, f"{workload}_user"),
            password=getattr(self, f"{workload}_password"),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str = HOSTED_PREFIX) -> Self:
        """Read this tier from `<prefix><FIELD>` variables; empty values count as unset."""
        raw: dict[str, Any] = {}
        for field in cls.model_fields:
            value = env.get(f"{prefix}{field.upper()}", "")
            if value == "" and field in cls.INHERITED:
                value = env.get(f"{HOSTED_PREFIX}{field.upper()}", "")
            if value != "":
                raw[field] = value
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            # `from None`: pydantic's own text would echo input values, passwords included.
            raise SettingsError(_describe(exc, prefix, raw)) from None


class CacheDbs(BaseModel):
    """The cache instance's db numbers by name (README "Plan settings": the cache role's db map)."""

    model_config = ConfigDict(frozen=True)

    user_index: int
    user_cache: int
    session_cache: int
    message_queue: int


# The cache tier's defaults are read off the schema's db map and bounds (`CACHE_DBS`,
# which the plan's `cache_dbs` defaults read too), never restated.


def _db(name: str) -> Any:
    """`db_<name>`: the number of one cache db, by default the schema's (the plan's)."""
    return Field(CACHE_DBS[name].db, ge=0, le=15)


_USERS, _SESSIONS, _MESSAGES = (
    CACHE_DBS[name] for name in ("user_cache", "session_cache", "message_queue")
)


class CacheTierSettings(TierSettings):
    """The local cache instance: a tier plus its db map and count/TTL bounds (plan defaults)."""

    INHERITED: ClassVar[tuple[str, ...]] = ("app",)

    db_user_index: int = _db("user_index")
    db_user_cache: int = _db("user_cache")
    db_session_cache: int = _db("session_cache")
    db_message_queue: int = _db("message_queue")
    user_cap: int = Field(_USERS.cap, ge=1, description="exact LRU bound of cached user records")
    message_cap: int = Field(_MESSAGES.cap, ge=1, description="exact LRU bound of queued messages")
    user_ttl: int = Field(_USERS.ttl, ge=1, description="seconds a cached user record lives")
    message_ttl: int = Field(_MESSAGES.ttl, ge=1, description="seconds a queued message lives")
    session_ttl: int = Field(_SESSIONS.ttl, ge=1, description="seconds a session lives")
    session_sliding: Flag = Field(_SESSIONS.sliding, description="each read renews a session's TTL")

    @model_validator(mode="after")
    def _distinct_dbs(self) -> Self:
        numbers = self.dbs.model_dump()
        if len(set(numbers.values())) != len(numbers):
            shown = ", ".join(f"{{prefix}}DB_{k.upper()}={v}" for k, v in numbers.items())
            raise ValueError(f"the cache dbs must be four different numbers, got {shown}")
        return self

    @property
    def dbs(self) -> CacheDbs:
        return CacheDbs(**{name: getattr(self, f"db_{name}") for name in CACHE_DB_NAMES})


class Settings(BaseModel):
    """Everything an application needs to connect: the hosted tier and, if set, a local cache."""

    model_config = ConfigDict(frozen=True)

    hosted: TierSettings
    cache: CacheTierSettings | None = None


def _describe(exc: ValidationError, prefix: str, raw: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else None
        message = error["msg"].removeprefix("Value error, ").replace("{prefix}", prefix)
        if field is None:
            lines.append(message)
            continue
        name = f"{prefix}{field.upper()}"
        if field not in raw:
            shown = "(unset)"
        elif field.endswith("password"):
            shown = "<hidden>"
        else:
            shown = repr(raw[field])
        lines.append(f"{name}={shown}: {message}")
    return "invalid Valkey settings:\n  " + "\n  ".join(lines)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse `KEY=value` lines: `#` comments, optional `export`, optional quotes.

    Errors name the file and line but never echo the line, which may hold a password.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read env file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").lstrip()
        key, sep, value = stripped.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _ENV_KEY.match(key):
            raise SettingsError(f"{path}:{number}: expected KEY=value with KEY like VALKEY_HOST")
        if value[:1] in ("'", '"'):
            quote = value[0]
            if len(value) < 2 or not value.endswith(quote):
                raise SettingsError(f"{path}:{number}: {key} has an unterminated {quote} quote")
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        values[key] = value
    return values


def load_settings(env: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Settings from `env` (default: the process environment) over the env file.

    The file is `env_file`, else the one named by VALKEY_ENV_FILE, else none; variables
    set in the environment win over the file so an operator can override one value.
    The cache tier exists when any VALKEY_CACHE_* variable is set.
    """
    env = dict(os.environ if env is None else env)
    if env_file is None and env.get(ENV_FILE_VARIABLE):
        env_file = Path(env[ENV_FILE_VARIABLE])
    merged = {**(read_env_file(env_file) if env_file else {}), **env}
    hosted = TierSettings.from_env(merged, HOSTED_PREFIX)
    has_cache = any(k.startswith(CACHE_PREFIX) and v != "" for k, v in merged.items())
    cache = CacheTierSettings.from_env(merged, CACHE_PREFIX) if has_cache else None
    return Settings(hosted=hosted, cache=cache)
