"""For any plan the model accepts, the rendered configs hold exactly what it declares.

The configs are read back line by line the way Valkey reads them (its `sdssplitargs`
tokeniser: blanks separate arguments, double and single quotes group them, `#` starts
a comment line), so a value that smuggles a newline, a quote or a second address into
a config would show up here as a directive the plan never declared.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from valkey_plans.plan import Plan, PlanError
from valkey_plans.plan import values as rule
from valkey_plans.plan.layout import DEBIAN, sentinel_paths
from valkey_plans.plan.render import instance_config, sentinel_config

ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}


def _quoted(line: str, i: int, quote: str) -> tuple[str, int]:
    """One quoted run starting after the quote at line[i - 1]; returns (text, next index)."""
    out = ""
    while i < len(line):
        c = line[i]
        if quote == '"' and c == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            if nxt == "x" and i + 3 < len(line):
                out += chr(int(line[i + 2 : i + 4], 16))
                i += 4
                continue
            out += ESCAPES.get(nxt, nxt)
            i += 2
            continue
        if quote == "'" and c == "\\" and line[i + 1 : i + 2] == "'":
            out += "'"
            i += 2
            continue
        if c == quote:
            if i + 1 < len(line) and not line[i + 1].isspace():
                raise ValueError(f"closing quote must be followed by a space: {line!r}")
            return out, i + 1
        out += c
        i += 1
    raise ValueError(f"unbalanced quotes: {line!r}")


def split_args(line: str) -> list[str]:
    """Valkey's sdssplitargs: the arguments of one config line."""
    args, i = [], 0
    while True:
        while i < len(line) and line[i].isspace():
            i += 1
        if i >= len(line):
            return args
        current = ""
        while i < len(line) and not line[i].isspace():
            if line[i] in "\"'":
                text, i = _quoted(line, i + 1, line[i])
                current += text
                break
            current += line[i]
            i += 1
        args.append(current)


def read_config(text: str) -> Counter:
    """Every directive with its arguments, as Valkey loads the file (a multiset)."""
    found: Counter = Counter()
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        args = split_args(line)
        found[(args[0].lower(), *args[1:])] += 1
    return found


def declared_instance(plan: Plan, inst, replicaof: str | None) -> Counter:
    """What the plan declares for one instance, written out from the model alone."""
    paths = DEBIAN.paths(inst.name)
    want = [
        ("bind", *inst.bind),
        ("port", "0" if inst.tls and inst.tls.only else str(inst.port)),
        ("protected-mode", "yes"),
        ("daemonize", "no"),
        ("pidfile", paths.pidfile),
        ("unixsocket", paths.unixsocket),
        ("unixsocketperm", "770"),
        ("loglevel", inst.loglevel),
        ("logfile", paths.logfile),
        ("dir", paths.data_dir),
        ("dbfilename", f"dump-{inst.name}.rdb"),
        ("appenddirname", f"appendonlydir-{inst.name}"),
        ("databases", str(inst.databases)),
        ("maxmemory", inst.maxmemory),
        ("maxmemory-policy", inst.maxmemory_policy),
        ("maxmemory-samples", str(inst.maxmemory_samples)),
        ("appendonly", "yes" if inst.appendonly else "no"),
        ("appendfsync", inst.appendfsync),
        ("aof-use-rdb-preamble", "yes"),
        ("stop-writes-on-bgsave-error", "yes"),
        ("hide-user-data-from-log", "yes"),
    ]
    want += [("save", *rule_.split()) for rule_ in inst.save] or [("save", "")]
    extra = {k: str(v) for k, v in inst.extra_config.items()}
    tuned = {**rule.TUNABLE_DIRECTIVES, **{k: v for k, v in extra.items() if k in tuned_names()}}
    want += [(k, *v.split()) for k, v in tuned.items()]
    want += [(k, *v.split()) for k, v in extra.items() if k not in tuned_names()]
    if inst.tls:
        want += [
            ("tls-port", str(inst.tls.port)),
            ("tls-cert-file", inst.tls.cert_file),
            ("tls-key-file", inst.tls.key_file),
            ("tls-ca-cert-file", inst.tls.ca_cert_file),
            ("tls-auth-clients", inst.tls.auth_clients),
        ]
    if plan.acl:
        want.append(("aclfile", paths.aclfile))
    if inst.role == "cluster-node":
        want += [
            ("cluster-enabled", "yes"),
            ("cluster-config-file", f"{paths.data_dir}/nodes-{inst.name}.conf"),
            ("cluster-node-timeout", str(inst.cluster_node_timeout)),
            ("cluster-announce-ip", inst.peer_address),
        ]
    if inst.peer_address:
        want.append(("replica-announce-ip", inst.peer_address))
    if replicaof:
        want.append(("replicaof", *replicaof.split()))
    if plan.acl and plan.replication:
        want.append(("include", paths.replication_auth))
    return Counter(want)


def tuned_names() -> set[str]:
    return set(rule.TUNABLE_DIRECTIVES)


LOOPBACK = ["127.0.0.1", "::1", "-::1", "127.0.0.2"]
OUTSIDE = ["10.0.0.1", "-10.0.0.2", "0.0.0.0", "2001:db8::7", "fe80::1%eth0"]
WORD = st.from_regex(r"[!#-&(-\[\]-~]{1,12}", fullmatch=True)
VALUE = st.lists(WORD, min_size=1, max_size=3).map(" ".join)
DIRECTIVE = st.from_regex(rule.DIRECTIVE, fullmatch=True).filter(
    lambda k: k not in rule.MANAGED_DIRECTIVES
)
PATH = st.from_regex(r"/[a-z0-9._@+=,-]{1,10}(/[a-z0-9_@+=,-]{1,10}){0,3}", fullmatch=True)


@st.composite
def instance_data(draw, index: int, outside: bool) -> dict:
    role = draw(
        st.sampled_from(["cache", "primary", "cluster-node"] if outside else ["cache", "primary"])
    )
    data = {
        "name": draw(st.from_regex(rule.NAME, fullmatch=True)) + f"-{index}",
        "role": role,
        "port": 1000 + index * 7 + draw(st.integers(0, 6)),
        "bind": draw(
            st.lists(
                st.sampled_from(LOOPBACK + (OUTSIDE if outside else [])),
                min_size=1,
                max_size=3,
                unique=True,
            )
        ),
        "maxmemory": draw(
            st.from_regex(r"(0|[1-9][0-9]{0,5})(b|k|kb|m|mb|g|gb|MB|Gb)?", fullmatch=True)
        ),
        "maxmemory-samples": draw(st.integers(1, 64)),
        "save": draw(
            st.lists(st.from_regex(r"[1-9][0-9]{0,4} [1-9][0-9]{0,4}", fullmatch=True), max_size=3)
        ),
        "appendonly": draw(st.booleans()),
        "appendfsync": draw(st.sampled_from(["always", "everysec", "no"])),
        "loglevel": draw(st.sampled_from(["debug", "verbose", "notice", "warning", "nothing"])),
        "extra_config": draw(
            st.dictionaries(
                st.one_of(DIRECTIVE, st.sampled_from(sorted(rule.TUNABLE_DIRECTIVES))),
                st.one_of(VALUE, st.integers(0, 10**6)),
                max_size=4,
            )
        ),
    }
    if role == "cluster-node":
        data["cluster"] = draw(st.from_regex(rule.NAME, fullmatch=True))
        data["bind"] = [*data["bind"], "10.9.9.9"]
    if draw(st.booleans()):
        data["tls"] = {
            "port": 30000 + index,
            "cert_file": draw(PATH),
            "key_file": draw(PATH),
            "ca_cert_file": draw(PATH),
            "auth_clients": draw(st.sampled_from(["yes", "no", "optional"])),
            "only": draw(st.booleans()),
        }
    return data


@st.composite
def plans(draw) -> Plan:
    outside = draw(st.booleans())
    count = draw(st.integers(1, 3))
    entries = [draw(instance_data(i, outside)) for i in range(count)]
    caches = [e["name"] for e in entries if e["role"] == "cache"]
    data = {
        "valkey_instances": entries,
        "valkey_acl": outside or draw(st.booleans()),
        "valkey_app": {"cache_instance": caches[0] if caches else None},
    }
    try:
        return Plan.from_host_data(draw(st.from_regex(rule.HOST_NAME, fullmatch=True)), data)
    except PlanError:
        assume(False)
        raise


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_instance_config_holds_exactly_the_declared_directives(plan):
    for inst in plan.instances:
        assert read_config(instance_config(plan, inst)) == declared_instance(plan, inst, None)


@settings(max_examples=60, deadline=None)
@given(
    plans(),
    st.from_regex(r"(10\.[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}) ([1-9][0-9]{3})", fullmatch=True),
)
def test_a_replica_config_follows_exactly_its_primary(plan, address):
    inst = plan.instances[0]
    data = inst.model_dump(by_alias=True)
    data.update(role="replica", replicaof="db-1/main", databases=1, bind=["10.0.0.3"], cluster=None)
    data.pop("cache_dbs")
    replica = type(inst).model_validate(data)
    want = declared_instance(plan, replica, address)
    assert read_config(instance_config(plan, replica, replicaof=address)) == want


@st.composite
def sentinel_plans(draw) -> Plan:
    sentinel = {
        "name": draw(st.from_regex(rule.NAME, fullmatch=True)),
        "primary": draw(st.from_regex(rule.HOST_NAME, fullmatch=True)) + "/main",
        "port": draw(st.integers(20000, 29999)),
        "bind": draw(
            st.lists(st.sampled_from(LOOPBACK + OUTSIDE[:4]), min_size=1, max_size=3, unique=True)
        ),
        "quorum": draw(st.integers(1, 5)),
        "down_after_ms": draw(st.integers(100, 10**6)),
        "failover_timeout_ms": draw(st.integers(1000, 10**7)),
    }
    data = {"valkey_instances": [], "valkey_sentinel": sentinel, "valkey_acl": True}
    data["valkey_app"] = {"cache_instance": None}
    try:
        return Plan.from_host_data("s-1", data)
    except PlanError:
        assume(False)
        raise


@settings(max_examples=80, deadline=None)
@given(sentinel_plans(), st.booleans())
def test_sentinel_config_holds_exactly_the_declared_directives(plan, with_password):
    s = plan.sentinel
    paths = sentinel_paths(DEBIAN, s.name)
    password = SecretStr("p" * 20 + "word") if with_password else None
    want = Counter(
        [
            ("port", str(s.port)),
            ("bind", *s.bind),
            ("daemonize", "no"),
            ("pidfile", paths.pidfile),
            ("logfile", paths.logfile),
            ("dir", paths.data_dir),
            ("sentinel", "announce-ip", s.address),
            ("sentinel", "monitor", s.name, "10.0.0.1", "6380", str(s.quorum)),
            ("sentinel", "down-after-milliseconds", s.name, str(s.down_after_ms)),
            ("sentinel", "failover-timeout", s.name, str(s.failover_timeout_ms)),
            ("sentinel", "parallel-syncs", s.name, "1"),
        ]
    )
    if password:
        secret = password.get_secret_value()
        want += Counter(
            [
                ("sentinel", "auth-user", s.name, "sentinel"),
                ("sentinel", "auth-pass", s.name, secret),
                ("sentinel", "sentinel-pass", secret),
                ("requirepass", secret),
            ]
        )
    assert read_config(sentinel_config(plan, "10.0.0.1 6380", password)) == want


def test_the_reader_sees_a_smuggled_directive():
    """The property above could not fail if the reader missed injected lines."""
    assert read_config("bind 127.0.0.1\nprotected-mode no\n") == Counter(
        [("bind", "127.0.0.1"), ("protected-mode", "no")]
    )
    assert read_config('rename-command "FLUSHALL" ""') == Counter(
        [("rename-command", "FLUSHALL", "")]
    )


BROAD = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=14)
TARGETS = ["name", "bind", "maxmemory", "save", "extra-key", "extra-value", "tls", "announce_ip"]


def with_one_value(field: str, text: str) -> dict:
    """A valid cache plan with `text` written into one field, as a hurried user might."""
    entry: dict = {"name": "cache", "role": "cache", "port": 6379}
    if field in ("name", "maxmemory", "announce_ip"):
        entry[field] = text
    elif field == "bind":
        entry["bind"] = ["127.0.0.1", text]
    elif field == "save":
        entry["save"] = [text]
    elif field == "extra-key":
        entry["extra_config"] = {text: "yes"}
    elif field == "extra-value":
        entry["extra_config"] = {"notify-keyspace-events": text}
    else:
        entry["tls"] = {"port": 6390, "cert_file": text, "key_file": "/k", "ca_cert_file": "/c"}
    return {"valkey_instances": [entry], "valkey_acl": True, "valkey_app": {"cache_instance": None}}


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(TARGETS), st.one_of(BROAD, st.sampled_from(["a\nb", '"x"', "::1%1 0.0.0.0"]))
)
def test_any_value_the_model_accepts_renders_as_declared(field, text):
    try:
        plan = Plan.from_host_data("h", with_one_value(field, text))
    except PlanError:
        return  # refused: the refusal table checks that the message is right
    (inst,) = plan.instances
    assert read_config(instance_config(plan, inst)) == declared_instance(plan, inst, None)
