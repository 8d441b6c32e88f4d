"""Rules for plan values that reach a config file, a root shell or a server.

Every value a plan holds is written in a hurry by someone and then runs as root, so
each kind of value has one rule here, applied by the plan model before any host is
touched: names and paths match in full (never `re.match` with `$`, which also
matches before a final newline), addresses are parsed as IP addresses, paths are
absolute and normalised. Each rule raises ValueError with the words "allowed: ..."
so that the plan's error line says what to write instead.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from urllib.parse import urlsplit

from valkey_plans.domains import DOMAIN_PATTERN

#: Instance, cluster, sentinel and application names: they become unit names and paths.
NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
#: The portable POSIX user/group name: letters, digits, '.', '_', '-', not '-' first.
POSIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
#: An inventory host name as it appears in "HOST/INSTANCE" references and comments.
HOST_NAME = re.compile(r"@?[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
#: Characters a path may hold: Valkey splits config lines on blanks and quotes.
PATH_CHARS = re.compile(r"/[A-Za-z0-9._@+=,/-]*")
#: One-line descriptions (custom domains): printable, no control characters.
TEXT = re.compile(r"[ -~]{1,200}")
#: http(s) mirror URLs for apt source lines.
MIRROR = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
#: Exporter key patterns: an optional `dbN=` and a glob of key characters; no comma (the
#: exporter's list separator), blank or quote, so one pattern is one ACL `%R~` rule.
KEY_PATTERN = re.compile(r"(db([0-9]|1[0-5])=)?[A-Za-z0-9:_*?@.+-]{1,100}")
#: What a value matching each of those patterns in full is, in the error line's words.
ALLOWED: dict[re.Pattern[str], str] = {
    NAME: "a lowercase letter, then up to 30 lowercase letters, digits or '-'",
    POSIX_NAME: "a portable POSIX name: a letter or '_', then up to 31 letters, digits,"
    " '.', '_' or '-' (no spaces)",
    HOST_NAME: "an inventory host name: letters, digits, '.', '_', '-' (optionally '@' first)",
    PATH_CHARS: "an absolute, normalised path of letters, digits and . _ @ + = , - (no"
    " spaces, quotes, '..' or '//')",
    TEXT: "one line of 1 to 200 printable ASCII characters",
    KEY_PATTERN: "a key glob of 1 to 100 letters, digits and : _ * ? @ . + -, optionally"
    " after 'dbN=' (N 0..15), e.g. 'db1=usr:*'",
    MIRROR: "an http:// or https:// URL of a Debian mirror (host, optional port and path;"
    " no spaces, credentials, query or fragment)",
}
NAME_RULE = ALLOWED[NAME]
#: An interface name after '%' in an IPv6 scope: nothing else may follow it.
SCOPE_ID = re.compile(r"[A-Za-z0-9_.-]{1,15}")
#: One-line values for extra_config: printable, no quotes or backslash, which Valkey's
#: config parser would read as a different number of arguments than written.
CONFIG_VALUE = re.compile(r"[!#-&(-\[\]-~]+( [!#-&(-\[\]-~]+)*")
CONFIG_VALUE_RULE = (
    "one line of printable ASCII words separated by single spaces, without quotes or backslashes"
)
#: maxmemory: bytes, optionally with a unit (Valkey's own units, any case).
MEMORY = re.compile(r"(0|[1-9][0-9]{0,18})(b|k|kb|m|mb|g|gb)?", re.IGNORECASE)
MEMORY_UNITS = {
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
#: One `save` rule: "SECONDS CHANGES".
SAVE = re.compile(r"[1-9][0-9]{0,9} [1-9][0-9]{0,9}")
#: A Valkey directive name (the keys of extra_config).
DIRECTIVE = re.compile(r"[a-z][a-z0-9-]{0,63}")
#: A DNS host name (of a hosted Valkey).
HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)

#: Directories the deploy must never chown or chmod as an application settings dir.
SYSTEM_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/usr/bin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/etc",
        "/usr/local/lib",
        "/usr/local/sbin",
        "/usr/local/share",
        "/usr/sbin",
        "/usr/share",
        "/usr/src",
        "/usr/include",
        "/var/backups",
        "/var/cache",
        "/var/lib",
        "/var/local",
        "/var/lock",
        "/var/log",
        "/var/mail",
        "/var/opt",
        "/var/run",
        "/var/spool",
        "/var/tmp",
        "/etc/apt",
        "/etc/cron.d",
        "/etc/default",
        "/etc/init.d",
        "/etc/pam.d",
        "/etc/security",
        "/etc/ssh",
        "/etc/ssl",
        "/etc/sudoers.d",
        "/etc/systemd",
        "/etc/valkey",
        "/var/lib/valkey",
        "/var/log/valkey",
        "/var/lib/valkey-plans",
        "/usr/local/lib/valkey-plans",
        "/etc/profile.d",
        "/etc/network",
        "/etc/sysctl.d",
        "/etc/ld.so.conf.d",
        "/etc/logrotate.d",
    ]
)
#: Trees that hold no configuration at all: kernel views, runtime state, the boot loader.
SYSTEM_TREES = ("/proc/", "/sys/", "/dev/", "/run/", "/boot/")


def whole(pattern: re.Pattern[str], value: str, also: bool = True) -> str:
    """`value` when `pattern` (one of ALLOWED's) matches all of it and `also` holds;
    otherwise ValueError saying what is allowed."""
    if not (also and pattern.fullmatch(value)):
        raise ValueError(f"allowed: {ALLOWED[pattern]}")
    return value


def name(value: str) -> str:
    return whole(NAME, value)


def posix_name(value: str) -> str:
    """A user or group name; all digits would be read as a numeric id, so they are not."""
    return whole(POSIX_NAME, value, also=not value.isdigit())


def host_name(value: str) -> str:
    return whole(HOST_NAME, value)


def reference(value: str) -> str:
    """ "HOST/INSTANCE": an instance of another inventory host."""
    host, _, instance = value.partition("/")
    if not (HOST_NAME.fullmatch(host) and NAME.fullmatch(instance)):
        raise ValueError(
            f"allowed: 'INVENTORY_HOST/INSTANCE' ({ALLOWED[HOST_NAME]}; then {NAME_RULE})"
        )
    return value


def path(value: str) -> str:
    """An absolute, normalised path that survives a config line and a shell word."""
    return whole(PATH_CHARS, value, also=posixpath.normpath(value) == value)


def secrets_file(value: str) -> str:
    """The secrets file on the machine running pyinfra: a path, `~/` expanded."""
    return path(os.path.expanduser(value) if value.startswith("~/") else value)


def settings_dir(value: str) -> str:
    """A directory the deploy may own (it chgrps and chmods it to 0750)."""
    path(value)
    parts = value.strip("/").split("/")
    if value in SYSTEM_DIRS or value.startswith(SYSTEM_TREES) or len(parts) < 2:
        raise ValueError(
            "is a system directory; allowed: a dedicated directory the deploy may own,"
            " at least two levels deep (for example /etc/valkey-plans)"
        )
    if parts[0] == "home" and len(parts) == 2:
        raise ValueError("is a home directory; allowed: a dedicated directory inside it")
    return value


def ip(value: str, what: str = "an IP address") -> str:
    """An IPv4/IPv6 address; an IPv6 scope id may only name an interface."""
    address, _, scope = value.partition("%")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address; allowed: {what} (IPv4/IPv6)") from None
    if scope and (parsed.version != 6 or not SCOPE_ID.fullmatch(scope)):
        raise ValueError(
            f"{value!r}: allowed: {what}; a scope id after '%' (IPv6 only) names one interface"
        )
    return value


def key_patterns(value: list[str]) -> list[str]:
    """The exporter's key patterns: each a KEY_PATTERN, none twice."""
    for pattern in value:
        whole(KEY_PATTERN, pattern)
    if len(set(value)) != len(value):
        raise ValueError("allowed: each pattern once")
    return value


def announce_ip(value: str) -> str:
    """The one address other hosts reach an instance at (blank is no address)."""
    return ip(value.strip() and value, "one IP address")


def bind_address(value: str) -> str:
    """A bind entry: an IP address, with Valkey's optional '-' prefix (bind if present)."""
    ip(value.removeprefix("-"), "IP addresses, each optionally prefixed with '-'")
    return value


def is_loopback(value: str) -> bool:
    return ipaddress.ip_address(value.removeprefix("-").partition("%")[0]).is_loopback


def binds(value: list[str], hint: str = "") -> list[str]:
    """A bind list (a sentinel's): at least one address, each a `bind_address`."""
    if not value:
        raise ValueError(f"allowed: at least one IP address{hint}")
    for address in value:
        bind_address(address)
    return value


def instance_binds(value: list[str]) -> list[str]:
    """An instance's bind list: `binds`, each address once."""
    binds(value, " (127.0.0.1 for loopback only)")
    if len(set(value)) != len(value):
        raise ValueError("an address is listed twice; allowed: each address once")
    return value


def maxmemory(value: object) -> str:
    """maxmemory as written (bytes as an integer, or digits and a unit), lower-cased."""
    text = value if isinstance(value, str) else str(value) if type(value) is int else ""
    if not MEMORY.fullmatch(text):
        raise ValueError(
            "allowed: bytes as an integer, optionally with a unit b, k, kb, m, mb, g, gb"
            " (for example 256mb); 0 means no limit"
        )
    return text.lower()


def memory_bytes(value: str) -> int:
    """A `maxmemory` value in bytes, as Valkey reports it in CONFIG GET (1k = 1000, 1kb = 1024)."""
    number, unit = MEMORY.fullmatch(value).groups()  # type: ignore[union-attr]
    return int(number) * MEMORY_UNITS[unit or "b"]


def samples(value: int) -> int:
    """maxmemory-samples: how many keys an eviction looks at."""
    if not 1 <= value <= 64:
        raise ValueError("allowed: an integer from 1 to 64")
    return value


def save_rules(value: list[str]) -> list[str]:
    """`save` rules, "SECONDS CHANGES" each; none means no snapshots."""
    for entry in value:
        if not SAVE.fullmatch(entry):
            raise ValueError(
                f"{entry!r} is not a save rule; allowed: 'SECONDS CHANGES' with two"
                " positive integers and one space, or an empty list for no snapshots"
            )
    return value


def extra_config(value: dict[str, str | int]) -> dict[str, str]:
    """extra_config: directives the deploy leaves alone, each with a one-line value."""
    return {extra_directive(key): config_value(key, str(setting)) for key, setting in value.items()}


def domain_code(code: str) -> str:
    """A key domain: exactly 3 lowercase letters (`usr`)."""
    if not DOMAIN_PATTERN.fullmatch(code):
        raise ValueError(f"{code!r}: allowed: exactly 3 lowercase letters a-z")
    return code


def domain_codes(value: list[str]) -> list[str]:
    """The domains a plan declares: each a `domain_code` (which must also be known)."""
    for code in value:
        domain_code(code)
    return value


def custom_domains(value: dict[str, str]) -> dict[str, str]:
    """A plan's own domains: code -> a one-line description."""
    for code, description in value.items():
        domain_code(code)
        text(description)
    return value


def config_value(key: str, value: str) -> str:
    if not CONFIG_VALUE.fullmatch(value):
        raise ValueError(f"extra_config[{key!r}] = {value!r}: allowed: {CONFIG_VALUE_RULE}")
    return value


def text(value: str) -> str:
    return whole(TEXT, value)


def mirror(value: str) -> str:
    return whole(MIRROR, value, also=".." not in value)


def hosted_url(value: str) -> str:
    """valkey(s)://HOST:PORT and nothing more: credentials come from the secrets."""
    allowed = (
        "allowed: valkey://HOST:PORT or valkeys://HOST:PORT with nothing else (no user or"
        " password: they come from the secrets; no /DB: db 0 only; no query)"
    )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(allowed)
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"port out of range; {allowed}") from None
    host = parts.hostname or ""
    if (
        parts.scheme not in ("valkey", "valkeys")
        or parts.username is not None
        or "@" in parts.netloc
        or parts.path
        or parts.query
        or parts.fragment
        or "#" in value
        or "?" in value
        or port is None
        or not 1 <= port <= 65535
        or not (HOSTNAME.fullmatch(host) or _is_ip(host))
    ):
        raise ValueError(allowed)
    return value


#: A username on a hosted service: it reaches an env file and an AUTH command as one word.
SERVICE_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
SERVICE_USER_RULE = "1 to 128 of letters, digits and . _ @ + - (a letter or digit first)"
#: What a PEM CA bundle holds at least once.
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def reach_address(value: str) -> str:
    """Where other hosts reach this one (its ssh_hostname): a DNS name or an IP address."""
    if not (HOSTNAME.fullmatch(value) or _is_ip(value)):
        raise ValueError("allowed: a DNS host name (letters, digits, '-' and '.') or an IP address")
    return value


def server_name(value: str) -> str:
    """The DNS name a hosted tier's certificate must carry (TLS SNI and hostname check)."""
    if not HOSTNAME.fullmatch(value):
        raise ValueError("allowed: a DNS host name (letters, digits, '-' and '.')")
    return value


def service_user(value: str) -> str:
    """A login name on a hosted service."""
    if not SERVICE_USER.fullmatch(value):
        raise ValueError(f"allowed: {SERVICE_USER_RULE}")
    return value


def seed(value: str) -> str:
    """One "HOST:PORT" node of a hosted cluster (a DNS name or an IPv4 address)."""
    host, _, number = value.rpartition(":")
    valid_host = HOSTNAME.fullmatch(host) or (_is_ip(host) and ":" not in host)
    if not (valid_host and number.isdigit() and 1 <= int(number) <= 65535):
        raise ValueError("allowed: 'HOST:PORT' (a DNS name or an IPv4 address; port 1..65535)")
    return value


def seeds(value: list[str]) -> list[str]:
    """A hosted cluster's other nodes, each a `seed`, each once."""
    for entry in value:
        seed(entry)
    if len(set(value)) != len(value):
        raise ValueError("a node is listed twice; allowed: each 'HOST:PORT' once")
    return value


def ca_file(value: str) -> str:
    """`system`, or a PEM CA bundle on the machine running pyinfra (read now, so that a
    missing or wrong file stops the run before any change, not halfway)."""
    if value == "system":
        return value
    path(value)
    allowed = "allowed: 'system' or a readable PEM CA file on the machine running pyinfra"
    try:
        with open(value, encoding="ascii", errors="replace") as pem:
            text = pem.read(1_000_000)
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror}); {allowed}") from None
    if PEM_CERTIFICATE not in text:
        raise ValueError(f"holds no PEM certificate; {allowed}")
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


#: extra_config directives the deploy writes itself or relies on, with what to use instead.
_FIELD = "set it with the instance's `{}` field"
MANAGED_DIRECTIVES: dict[str, str] = {
    "bind": _FIELD.format("bind"),
    "bind-source-addr": _FIELD.format("bind"),
    "port": _FIELD.format("port"),
    "protected-mode": "the deploy keeps it on; bind beyond loopback needs valkey_acl: true",
    "unixsocket": "the deploy's unix socket is what valkey-cli and the checks use",
    "unixsocketperm": "the deploy's unix socket is what valkey-cli and the checks use",
    "unixsocketgroup": "the deploy's unix socket is what valkey-cli and the checks use",
    "dir": "the data directory is fixed by Debian's hardened unit",
    "dbfilename": "backups and checks find the RDB file by the instance's name",
    "appenddirname": "backups and checks find the AOF directory by the instance's name",
    "appendfilename": "backups and checks find the AOF files by the instance's name",
    "pidfile": "the service runner finds the process by its pidfile",
    "logfile": "the checks read the instance's own log file",
    "syslog-enabled": "the checks read the instance's own log file",
    "daemonize": "the service runner (systemd or start-stop-daemon) supervises the process",
    "supervised": "the service runner (systemd or start-stop-daemon) supervises the process",
    "databases": _FIELD.format("databases"),
    "maxmemory": _FIELD.format("maxmemory"),
    "maxmemory-policy": _FIELD.format("maxmemory-policy"),
    "maxmemory-samples": _FIELD.format("maxmemory-samples"),
    "save": _FIELD.format("save"),
    "appendonly": _FIELD.format("appendonly"),
    "appendfsync": _FIELD.format("appendfsync"),
    "loglevel": _FIELD.format("loglevel"),
    "aof-use-rdb-preamble": "restores and upgrades rely on RDB-preamble AOF files",
    "stop-writes-on-bgsave-error": "a failing disk must stop writes, not lose them",
    "hide-user-data-from-log": "keys and values must stay out of the logs",
    "aclfile": "set valkey_acl: true; the deploy writes the aclfile",
    "user": "set valkey_acl: true; the deploy writes the ACL users",
    "requirepass": "passwords never go into the plan: set valkey_acl: true and the secrets",
    "masteruser": "replicas log in with the deploy's replica user",
    "masterauth": "passwords never go into the plan: the deploy writes the replica login",
    "primaryuser": "replicas log in with the deploy's replica user",
    "primaryauth": "passwords never go into the plan: the deploy writes the replica login",
    "replicaof": "use role replica with `replicaof: HOST/INSTANCE`",
    "slaveof": "use role replica with `replicaof: HOST/INSTANCE`",
    "replica-announce-ip": _FIELD.format("announce_ip"),
    "slave-announce-ip": _FIELD.format("announce_ip"),
    "cluster-enabled": "use role cluster-node with `cluster: NAME`",
    "cluster-config-file": "Valkey keeps the cluster's state in the deploy's file",
    "cluster-node-timeout": _FIELD.format("cluster_node_timeout"),
    "cluster-announce-ip": _FIELD.format("announce_ip"),
    "cluster-port": "the cluster bus is port + 10000, which the plan checks for clashes",
    "include": "the whole config comes from the plan; an include would bypass it",
    "loadmodule": "modules run arbitrary code inside the server",
    "enable-debug-command": "opens DEBUG, which can crash or rewrite the server",
    "enable-module-command": "opens MODULE LOAD, which runs arbitrary code",
    "enable-protected-configs": "opens CONFIG SET of paths the server writes to",
    "rename-command": "clients, checks and the deploy call commands by their names",
    "tls-port": "set it with the instance's `tls` settings",
    "tls-cert-file": "set it with the instance's `tls` settings",
    "tls-key-file": "set it with the instance's `tls` settings",
    "tls-ca-cert-file": "set it with the instance's `tls` settings",
    "tls-auth-clients": "set it with the instance's `tls` settings",
}

#: Deploy defaults that extra_config may override (written once, with the plan's value).
TUNABLE_DIRECTIVES: dict[str, str] = {
    "tcp-backlog": "511",
    "timeout": "0",
    "tcp-keepalive": "300",
    "lazyfree-lazy-eviction": "yes",
    "lazyfree-lazy-expire": "yes",
    "lazyfree-lazy-user-del": "yes",
    "always-show-logo": "no",
}


def extra_directive(key: str) -> str:
    """An extra_config key: a Valkey directive name that the deploy does not manage."""
    if not DIRECTIVE.fullmatch(key):
        raise ValueError(
            f"extra_config[{key!r}]: allowed: a Valkey directive name (lowercase letters,"
            " digits and '-')"
        )
    reason = MANAGED_DIRECTIVES.get(key)
    if reason is not None:
        managed = f"extra_config[{key!r}] is managed by the deploy ({reason})"
        raise ValueError(f"{managed}; allowed: any other Valkey directive")
    return key


def port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("allowed: a TCP port from 1 to 65535")
    return value
