"""Every command built from plan data quotes its arguments (issue 11, item 2).

The deploy runs as root, so a plan value that reaches a shell unquoted is a command of
its own (`group = "x;touch /tmp/pwned"`), and a real value with a space breaks the
deploy (`group = "domain users"`). Three kinds of proof:

- a property test over the plan model: for any plan the model accepts, built with
  hostile-but-maybe-allowed values, every command the deploy builds for a Linux host
  carries each plan value whole inside one shell word, every special character quoted;
- table tests with the concrete group names of the issue;
- the same check on each command builder given hostile values directly, whatever the
  model allows: quoting must not depend on validation (and the property test can only
  catch a missing quote while the model still lets a special character through).

A command's words are read the way sh reads them (`shell_words`): `shlex.split` does
not know command substitution, and takes an unquoted `$`, `*` or backtick literally,
where the shell would expand it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyinfra.api import FileUploadCommand
from testinfra.backend.base import BaseBackend

from tests.unit.pyinfra_commands import (
    installed_hashes,
    linux_facts,
    planned_operations,
    shell_text,
    upload_destinations,
)
from valkey_plans.deploy import valkey_plan
from valkey_plans.deploy.cluster import ClusterView, OpenSlots, cluster_formed
from valkey_plans.deploy.cluster_nodes import Member
from valkey_plans.deploy.facts import RunningPid
from valkey_plans.deploy.functions import library_loaded
from valkey_plans.deploy.handover import ReplicationRole, primary_handed_over
from valkey_plans.deploy.operations import acl_reload, checked_file
from valkey_plans.deploy.restarts import sentinel_swapped, settled_restart, systemctl_restart
from valkey_plans.deploy.service import Init, Service, daemon, service_runner
from valkey_plans.plan import Plan, PlanError, topology
from valkey_plans.plan.render import TEMPLATE_DIR
from valkey_plans.plan.secrets import ALL_USERS

# --- reading a command the way sh does -----------------------------------------------

#: Characters the shell never treats specially (shlex.quote leaves them bare).
SAFE = re.compile(r"[\w@%+=:,./-]")
OPERATORS = set(";&|<>()")
#: Stands for a command substitution inside a word; checked as a command of its own.
SUBSTITUTION = "$(...)"


@dataclass(frozen=True)
class Word:
    """One shell word after quote removal; `quoted[i]`: character i was taken literally."""

    text: str
    quoted: tuple[bool, ...]


def _skip_double(text: str, i: int) -> int:
    """Index just past the double-quoted string whose opening quote is at i - 1."""
    while text[i] != '"':
        if text[i] == "\\":
            i += 2
        elif text.startswith("$((", i):
            i = text.index("))", i) + 2
        elif text.startswith("$(", i):
            i = _closing(text, i + 2) + 1
        else:
            i += 1
    return i + 1


def _closing(text: str, i: int) -> int:
    """Index of the `)` that closes the command substitution whose body starts at i."""
    depth = 1
    while True:
        c = text[i]
        if c == "'":
            i = text.index("'", i + 1) + 1
        elif c == "\\":
            i += 2
        elif c == '"':
            i = _skip_double(text, i + 1)
        elif text.startswith("$((", i):
            i = text.index("))", i) + 2
        elif text.startswith("$(", i):
            i = _closing(text, i + 2) + 1
        else:
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0:
                return i
            i += 1


class _Lexer:
    """sh's word splitting and quote removal, for the shell this deploy writes: quotes,
    backslashes, operators, `$(...)` (its body kept apart) and `$((...))`."""

    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0
        self.words: list[Word] = []
        self.bodies: list[str] = []
        self.chars: list[str] = []
        self.flags: list[bool] = []
        self.open = False

    def add(self, chars: str, quoted: bool) -> None:
        self.chars.append(chars)
        self.flags += [quoted] * len(chars)
        self.open = True

    def end_word(self) -> None:
        if self.open:
            self.words.append(Word("".join(self.chars), tuple(self.flags)))
        self.chars, self.flags, self.open = [], [], False

    def dollar(self) -> None:
        text, i = self.text, self.i
        if text.startswith("$((", i):
            end = text.index("))", i) + 2
            self.add(text[i:end], False)
        elif text.startswith("$(", i):
            end = _closing(text, i + 2) + 1
            self.bodies.append(text[i + 2 : end - 1])
            self.add(SUBSTITUTION, False)
        else:
            end = i + 1
            self.add("$", False)  # an expansion, inside double quotes too
        self.i = end

    def double(self) -> None:
        text = self.text
        self.i += 1
        self.open = True  # "" is a word too
        while text[self.i] != '"':
            c = text[self.i]
            if c == "\\" and text[self.i + 1] in '$`"\\\n':
                self.add(text[self.i + 1], True)
                self.i += 2
            elif c == "$":
                self.dollar()
            else:
                self.add(c, c != "`")
                self.i += 1
        self.i += 1

    def run(self) -> tuple[list[Word], list[str]]:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c in " \t\n":
                self.end_word()
                self.i += 1
            elif c in OPERATORS:
                self.end_word()
                start = self.i
                while self.i < len(text) and text[self.i] in OPERATORS:
                    self.i += 1
                self.words.append(Word(text[start : self.i], (False,) * (self.i - start)))
            elif c == "'":
                end = text.index("'", self.i + 1)
                self.add(text[self.i + 1 : end], True)
                self.i = end + 1
            elif c == "\\":
                self.add(text[self.i + 1], True)
                self.i += 2
            elif c == '"':
                self.double()
            elif c == "$":
                self.dollar()
            else:
                self.add(c, False)
                self.i += 1
        self.end_word()
        return self.words, self.bodies


def shell_words(command: str) -> list[Word]:
    """Every word of `command` and, in turn, of each command substitution in it."""
    words, bodies = _Lexer(command).run()
    return words + [word for body in bodies for word in shell_words(body)]


def misquoted(command: str, value: str, marker: str) -> list[str]:
    """How `value` (found by `marker`, a part of it) reaches `command` other than whole
    inside one shell word, every special character of it quoted. [] where it is right."""
    if marker not in command:
        return []
    words = shell_words(command)
    problems = []
    if sum(w.text.count(marker) for w in words) != command.count(marker):
        problems.append(f"{value!r} is not inside a word")
    for word in words:
        if marker not in word.text:
            continue
        starts = [m.start() for m in re.finditer(re.escape(value), word.text)]
        if len(starts) != word.text.count(marker):
            problems.append(f"{value!r} is split: word {word.text!r}")
        for start in starts:
            flags = word.quoted[start : start + len(value)]
            loose = {c for c, q in zip(value, flags, strict=True) if not q and not SAFE.match(c)}
            if loose:
                problems.append(f"{value!r}: {sorted(loose)} unquoted in {word.text!r}")
    return problems


def assert_quoted(commands: list[str], values: dict[str, str]) -> None:
    """Each value (marker -> value) that reaches a command is whole and quoted in it."""
    problems = [
        f"{p}\n    in: {command}"
        for command in commands
        for marker, value in values.items()
        for p in misquoted(command, value, marker)
    ]
    assert not problems, "\n".join(problems)


def test_the_reader_splits_like_sh():
    """The reader of these tests against sh itself, and on the shapes the deploy writes."""
    plain = "a 'b c' \"d e\" f\\ g 'n'\"'\"'o' \"p\\\"q\" r'$s'"
    said = subprocess.run(
        ["sh", "-c", f"printf '%s\\0' {plain}"], capture_output=True, text=True, check=True
    )
    assert [w.text for w in shell_words(plain)] == said.stdout.split("\0")[:-1]
    command = "h=\"$(cat 'i j')\" k;l $((m+1)) 2>/dev/null | tr -d '\\r'"
    assert [w.text for w in shell_words(command)] == [
        f"h={SUBSTITUTION}",
        *("k", ";", "l", "$((m+1))", "2", ">", "/dev/null", "|", "tr", "-d", "\\r"),
        *("cat", "i j"),
    ]
    assert not shell_words('x "$y"')[1].quoted[0], "a $ in double quotes still expands"
    assert misquoted("chgrp a$b /p", "a$b", "a") == ["'a$b': ['$'] unquoted in 'a$b'"]
    assert misquoted("chgrp domain users /p", "domain users", "domain")
    assert misquoted("chgrp x;touch /p", "x;touch", "x")
    assert not misquoted("chgrp 'domain users' /p", "domain users", "domain")
    assert not misquoted("chgrp 'x;touch' /p", "x;touch", "x")


# --- plans -----------------------------------------------------------------------------

Hosts = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def secrets_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 0600 secrets file with every user, outside the checkout (passwords: not commands)."""
    path = tmp_path_factory.mktemp("secrets") / "secrets.json"
    path.write_text(json.dumps({user: f"{user}-password-0123456789" for user in ALL_USERS}))
    path.chmod(0o600)
    return str(path)


def single_host(secrets: str, **values: str) -> dict[str, Any]:
    """A small site on one host: a cache with TLS and a primary, ACLs, app settings."""
    tls = {
        "port": 6390,
        "cert_file": values.get("cert", "/etc/ssl/certmark.pem"),
        "key_file": values.get("key", "/etc/ssl/keymark.pem"),
        "ca_cert_file": values.get("ca", "/etc/ssl/camark.pem"),
    }
    return {
        "valkey_instances": [
            {"name": "cache", "role": "cache", "port": 6379, "tls": tls},
            {"name": "hosted", "role": "primary", "port": 6380},
        ],
        "valkey_app": {
            "name": values.get("app", "appmark"),
            "env_dir": values.get("env_dir", "/srv/envmark"),
            "group": values.get("group", "grpmark"),
            "hosted_instance": "hosted",
        },
        "valkey_acl": True,
        "valkey_secrets_file": secrets,
        "valkey_debian_mirror": values.get("mirror", "http://mirrormark.example/debian"),
    }


def sentinel_hosts(secrets: str, **values: str) -> Hosts:
    """A primary and two replicas on three hosts, each with a sentinel."""
    hosts = []
    for index in range(3):
        address = f"10.0.0.{index + 1}"
        role = {"role": "primary"} if index == 0 else {"role": "replica", "replicaof": "h0/main"}
        hosts.append(
            (
                f"h{index}",
                {
                    "valkey_instances": [
                        {"name": "main", "port": 6390, "bind": ["127.0.0.1", address], **role}
                    ],
                    "valkey_sentinel": {
                        "name": values.get("sentinel", "sntmark"),
                        "primary": "h0/main",
                        "bind": ["127.0.0.1", address],
                    },
                    "valkey_acl": True,
                    "valkey_secrets_file": secrets,
                    "valkey_app": {
                        "group": values.get("group", "grpmark"),
                        "env_dir": values.get("env_dir", "/srv/envmark"),
                        "hosted_instance": "main",
                        "cache_instance": None,
                    },
                },
            )
        )
    return hosts


def cluster_hosts(secrets: str, count: int, announced: str, **values: str) -> Hosts:
    """`count` hosts with two cluster nodes each (n0, n1); the n0 of host `announced`
    announces the address `values["announce"]`."""
    hosts = []
    for index in range(count):
        name = f"h{index}"
        announce = {"announce_ip": values["announce"]} if name == announced else {}
        instances = [
            {
                "name": node,
                "role": "cluster-node",
                "cluster": values.get("cluster", "clumark"),
                "port": port,
                "bind": ["127.0.0.1", f"10.0.0.{index + 1}"],
                **(announce if node == "n0" else {}),
            }
            for node, port in (("n0", 7000), ("n1", 7001))
        ]
        hosts.append(
            (
                name,
                {
                    "valkey_instances": instances,
                    "valkey_cluster_replicas": 1,
                    "valkey_acl": True,
                    "valkey_secrets_file": secrets,
                    "valkey_app": {"hosted_instance": "n0", "cache_instance": None},
                },
            )
        )
    return hosts


def accepted(hosts: Hosts) -> list[Plan]:
    """The inventory's plans, or the model's PlanError (as the deploy checks them)."""
    plans = [Plan.from_host_data(name, data) for name, data in hosts]
    topology.validate(plans)
    return plans


def flat(planned: Any) -> list[str]:
    """The shell commands of `planned` (uploads are no shell command: the connector
    writes the file at its path; upload_destinations shows where)."""
    return [
        shell_text(command)
        for _, commands in planned
        for command in commands
        if not isinstance(command, FileUploadCommand)
    ]


def deploy_commands(hosts: Hosts, index: int, facts: dict[type, Any]) -> Any:
    """What the deploy plans for host `index` of `hosts` (every branch, see every_branch)."""
    name, data = hosts[index]
    others = [host for i, host in enumerate(hosts) if i != index]
    return planned_operations(valkey_plan, facts, data, name, others, every_branch=True)


def rerun_facts(first_run: Any) -> dict[type, Any]:
    """A host that ran `first_run`: its files in place with a wrong owner and mode, no
    systemd, every instance running (so a restart stops and starts it)."""
    hashes = installed_hashes(first_run)
    return linux_facts(
        HasSystemd=False,
        RunningPid=lambda pidfile: 4242,
        Sha256File=lambda path: hashes.get(path),
        File=lambda path: {"user": "nobody", "group": "nogroup", "mode": 644, "mtime": None},
        Directory=lambda path: {"user": "nobody", "group": "nogroup", "mode": 755},
    )


def first_and_rerun(hosts: Hosts, index: int) -> tuple[list[str], Any]:
    """Commands of a first run (systemd) and of a rerun (see rerun_facts); the first run."""
    first = deploy_commands(hosts, index, linux_facts())
    again = deploy_commands(hosts, index, rerun_facts(first))
    return flat(first) + flat(again), first


def node_id(address: str) -> str:
    return hashlib.sha1(address.encode()).hexdigest()


def formed(addresses: list[str]) -> dict[str, Any]:
    """ClusterView of a formed cluster of host pairs (n0, n1): each n0 a primary, each n1
    replicating the next pair's n0 (on another host)."""
    primaries, replicas = addresses[0::2], addresses[1::2]
    members = [Member(node_id(a), a, frozenset({"master"}), None, ("0-100",)) for a in primaries]
    members += [
        Member(
            node_id(a), a, frozenset({"slave"}), node_id(primaries[(i + 1) % len(primaries)]), ()
        )
        for i, a in enumerate(replicas)
    ]
    return {"state": "ok", "slots_assigned": 16384, "known_nodes": len(members), "members": members}


# --- the property: every plan the model accepts --------------------------------------

#: Tail characters that would take a shell by surprise if left unquoted.
HOSTILE = " \t\n$'\"\\;&|`*?~(){}<>#!"
NAME_TAIL = "0123456789x-"
PATH_TAIL = "0123456789x._@+=,-"


@dataclass(frozen=True)
class Field:
    """One plan value under test: `marker` (its fixed start, found in commands) and a tail.

    `safe`: tail characters every version of the model allows, so that some plans pass
    however strict the model becomes. `reaches`: it reaches a command at all (the others
    only reach files, which the renderer's tests read back).
    """

    key: str
    marker: str
    safe: str
    reaches: bool = True

    def values(self) -> st.SearchStrategy[str]:
        safe = st.text(self.safe, max_size=10) if self.safe else st.just("")
        hostile = st.text(HOSTILE + self.safe, min_size=1, max_size=10)
        return st.one_of(safe, hostile).map(lambda tail: self.marker + tail)


SINGLE_HOST = [
    Field("group", "grpmark", "0123456789x._-"),
    Field("env_dir", "/srv/envmark", PATH_TAIL),
    Field("app", "appmark", NAME_TAIL),
    Field("mirror", "http://mirrormark.example/debian", "0123456789x._~-"),
    Field("cert", "/etc/ssl/certmark", PATH_TAIL, reaches=False),
    Field("key", "/etc/ssl/keymark", PATH_TAIL, reaches=False),
    Field("ca", "/etc/ssl/camark", PATH_TAIL, reaches=False),
]
SENTINEL = [Field("sentinel", "sntmark", NAME_TAIL), *SINGLE_HOST[:2]]
CLUSTER = [Field("announce", "10.9.8.7", ""), Field("cluster", "clumark", NAME_TAIL, False)]
#: The model may refuse most hostile values (it is meant to): many drawn plans are then
#: filtered out by `assume`, which is expected here, not a badly built strategy.
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def check_field(field: Field, value: str, commands: list[str], fields: list[Field]) -> None:
    """`value` (and every other field, at its plain default) is whole and quoted."""
    assert_quoted(commands, {f.marker: value if f is field else f.marker for f in fields})
    if field.reaches:
        assert any(field.marker in c for c in commands), f"{field.key} reached no command"


def accepted_or_assumed(hosts: Hosts) -> None:
    """Go on only with a plan the model accepts (it may be stricter than this test)."""
    try:
        accepted(hosts)
    except PlanError:
        assume(False)


@PROPERTY
@given(data=st.data())
def test_single_host_commands_carry_each_plan_value_as_one_quoted_word(data, secrets_file):
    field = data.draw(st.sampled_from(SINGLE_HOST))
    value = data.draw(field.values(), label=field.key)
    hosts = [("db-1", single_host(secrets_file, **{field.key: value}))]
    accepted_or_assumed(hosts)
    commands, first = first_and_rerun(hosts, 0)
    check_field(field, value, commands, SINGLE_HOST)
    plan = Plan.from_host_data(*hosts[0])
    app_env = f"{plan.app.env_dir}/.{plan.app.name}.env.candidate"
    assert app_env in upload_destinations(first), "app settings uploaded elsewhere"


@PROPERTY
@given(data=st.data())
def test_sentinel_commands_carry_each_plan_value_as_one_quoted_word(data, secrets_file):
    field = data.draw(st.sampled_from(SENTINEL))
    value = data.draw(field.values(), label=field.key)
    hosts = sentinel_hosts(secrets_file, **{field.key: value})
    accepted_or_assumed(hosts)
    commands, _ = first_and_rerun(hosts, 1)
    check_field(field, value, commands, SENTINEL)


@PROPERTY
@given(data=st.data())
def test_cluster_commands_carry_each_plan_value_as_one_quoted_word(data, secrets_file):
    field = data.draw(st.sampled_from(CLUSTER))
    value = data.draw(field.values(), label=field.key)
    announce = value if field.key == "announce" else "10.9.8.7"
    values = {"cluster": value} if field.key == "cluster" else {}
    created = cluster_hosts(secrets_file, 3, "h1", announce=announce, **values)
    grown = cluster_hosts(secrets_file, 4, "h3", announce=announce, **values)
    accepted_or_assumed(created)
    accepted_or_assumed(grown)
    commands, _ = first_and_rerun(created, 0)
    # the deploy of the first host grows the cluster the first three hosts formed
    old = [f"{i.peer_address}:{i.port}" for p in accepted(grown)[:3] for i in p.instances]
    # ... and finds a slot a killed deploy left open (closed first, by --cluster fix)
    stale = {"fix": [5], "stale": [[9, old[1], "1" * 40]]}
    view = linux_facts(ClusterView=lambda **kwargs: formed(old), OpenSlots=lambda **kwargs: stale)
    commands += flat(deploy_commands(grown, 0, view))
    assert any("--cluster fix" in c for c in commands)
    assert any("CLUSTER SETSLOT 9 NODE" in c for c in commands)
    check_field(field, value, commands, CLUSTER)
    if field.key == "announce":  # the grown cluster asks the new node for its id
        assert any("CLUSTER MYID" in c and field.marker in c for c in commands)


# --- the group names -----------------------------------------------------------


def argv_in_sh(command: str) -> list[str]:
    """The arguments sh itself hands the program of a simple `command`: the program is
    a shell function that prints them; PATH leads nowhere, so nothing else can run."""
    program = shlex.split(command)[0]
    script = f'{program}() {{ printf "%s\\0" "$@"; }}; {command}'
    done = subprocess.run(
        ["/bin/sh", "-c", script], env={"PATH": "/nonexistent"}, capture_output=True, text=True
    )
    return done.stdout.split("\0")[:-1]


@pytest.mark.parametrize("group", ["domain users", "x;touch /tmp/pwned"])
def test_group_reaches_chgrp_and_chown_as_one_argument_or_is_refused(group, secrets_file):
    data = single_host(secrets_file, group=group)
    try:
        Plan.from_host_data("db-1", data)
    except PlanError as exc:  # the model refuses it: nothing reaches a host
        assert "valkey_app.group" in str(exc), str(exc)
        return
    commands, _ = first_and_rerun([("db-1", data)], 0)
    words = [shlex.split(c) for c in commands]
    settings_dir = [w for w in words if w[0] in ("chown", "chgrp") and "/srv/envmark" in w[-1]]
    assert ["chown", f"root:{group}", "/srv/envmark"] in settings_dir
    chgrp = [w for w in settings_dir if w[0] == "chgrp"]
    assert len(chgrp) == 4, chgrp  # env and JSON file: as candidates, then drifted
    assert all(w[:2] == ["chgrp", group] and len(w) == 3 for w in chgrp), chgrp
    assert not any("/tmp/pwned" in w for w in words), "a group name ran as a command"
    for command in commands:
        if command.startswith(("chgrp", "chown")) and "/srv/envmark" in command:
            assert argv_in_sh(command) == shlex.split(command)[1:], command


# --- each command builder, given hostile values whatever the model allows --------------

#: Values no plan should hold and every command must survive: each starts with "vpq".
HOSTILE_VALUES = [
    "vpq domain users",
    "vpq;touch /tmp/pwned",
    "vpq$(id)",
    "vpq'b\"c",
    "vpq`id`*",
    "vpq\\x~ #",
]


def builder_commands(deploy: Callable[[], None], **facts: Any) -> list[str]:
    """Commands of a deploy that calls operations directly (no plan, no validation)."""
    return flat(planned_operations(deploy, linux_facts(**facts), {}, "db-1", every_branch=True))


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_checked_file_quotes_owner_group_mode_and_paths(value):
    drifted = hashlib.sha256(b"old").hexdigest()

    def deploy() -> None:
        where = f"/srv/{value}"
        checked_file(
            name="new", content="new", dest=f"{where}/new", user=value, group=value, mode=value
        )
        checked_file(name="kept", content="new", dest=f"{where}/kept", record=f"{where}/r")
        checked_file(name="drifted", content="old", dest=f"{where}/old", user=value, group=value)

    commands = builder_commands(
        deploy,
        Sha256File=lambda path: drifted if path.endswith("/old") else None,
        File=lambda path: {"user": "root", "group": "root", "mode": 600},
    )
    assert any(c.startswith("chgrp") and c.endswith("/old'") for c in commands), commands
    assert_quoted(commands, {"vpq": value})


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_daemon_quotes_its_user_and_every_path(value):
    def deploy() -> None:
        run = f"/run/{value}"
        daemon(
            name="restart",
            config=f"/etc/{value}.conf",
            pidfile=f"{run}/pid",
            run_dir=run,
            socket=f"{run}/sock",
            logfile=f"/var/log/{value}.log",
            user=value,
            restarted=True,
        )

    commands = builder_commands(deploy, RunningPid=lambda pidfile: 4242)
    assert [c.split()[0] for c in commands] == ["start-stop-daemon", "install"], commands
    assert_quoted(commands, {"vpq": value})


def sentinel(unit: str = "s@x.service", pid: str = "/run/p") -> Service:
    return Service(label="Sentinel x", config="/c", pidfile=pid, unit=unit, run_dir="/run")


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_valkey_cli_calls_quote_socket_login_and_paths(value):
    socket, auth = f"/run/{value}/sock", f"/var/lib/{value}/admin"

    def deploy() -> None:
        acl_reload(name="acl", socket=socket, auth_file=auth, user=value)
        library_loaded(
            name="lib", port=6379, socket=socket, auth_file=auth, path=f"/etc/{value}/l.lua"
        )
        settled_restart(
            name="restart",
            restart=systemctl_restart(f"valkey-server@{value}.service"),
            socket=socket,
            cluster=True,
        )
        runner = service_runner(sentinel(pid=f"/run/{value}/pid"), Init.START_STOP_DAEMON)
        sentinel_swapped(
            name="swap",
            source=f"/etc/{value}/planned",
            dest=f"/etc/{value}/live",
            stop=runner.stop(),
            start=runner.start(),
            address="127.0.0.1",
            port=26379,
            group=value,
            auth_file=auth,
        )

    def handover() -> None:
        primary_handed_over(
            name="handover",
            socket=socket,
            auth_file=auth,
            address=value,
            port=6390,
            series="9.1",
            group=value,
            sentinel_address=value,
            sentinel_port=26379,
            sentinel_auth_file=f"/var/lib/{value}/sentinel",
        )

    commands = builder_commands(deploy)
    handed = builder_commands(handover, ReplicationRole=lambda **kwargs: "master")
    assert any("SENTINEL FAILOVER" in c for c in handed), handed
    commands += handed
    commands += [
        shell_text(ReplicationRole().command(socket=socket, auth_file=auth)),
        shell_text(RunningPid().command(pidfile=f"/run/{value}/pid")),
        shell_text(ClusterView().command(socket=socket, auth_file=auth)),
        shell_text(OpenSlots().command(address=f"{value}:7000", auth_file=auth)),
        shell_text(service_runner(sentinel(unit=f"s@{value}.service"), Init.SYSTEMD).stop()),
        shell_text(
            service_runner(sentinel(pid=f"/run/{value}/pid"), Init.START_STOP_DAEMON).stop()
        ),
        shell_text(service_runner(sentinel(pid=f"/run/{value}/pid"), Init.BREW).stop()),
    ]
    assert any("ACL LOAD" in c for c in commands) and any("FUNCTION LOAD" in c for c in commands)
    assert_quoted(commands, {"vpq": value})


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_cluster_commands_quote_node_addresses(value):
    plain = [f"10.0.0.{host}:{port}" for host in (1, 2, 3) for port in (7000, 7001)]
    new = [f"{value}:7000", f"{value}:7001"]
    auth = f"/var/lib/{value}/admin"

    def deploy(addresses: list[str]) -> Callable[[], None]:
        def formed_op() -> None:
            hosts = [f"h{i // 2}" for i in range(len(addresses))]
            cluster_formed(
                name="cluster",
                addresses=addresses,
                hosts=hosts,
                replicas=1,
                socket="/s",
                auth_file=auth,
            )

        return formed_op

    created = builder_commands(deploy(new + plain[2:]))
    grown = builder_commands(deploy(plain + new), ClusterView=lambda **kwargs: formed(plain))
    assert any("--cluster create" in c for c in created)
    assert any("CLUSTER MYID" in c and "vpq" in c for c in grown), grown
    assert any("CLUSTER REPLICATE" in c for c in grown), grown
    assert_quoted(created + grown, {"vpq": value})


def test_macos_checker_and_paths_quote_the_homebrew_prefix():
    from tests.unit.test_macos_commands import PLAN, mac_facts

    prefix = "/opt/vpq home brew"
    facts = mac_facts(BrewPrefix=prefix)
    commands = flat(planned_operations(valkey_plan, facts, PLAN))
    restart = mac_facts(BrewPrefix=prefix, RunningPid=lambda pidfile: 4242)
    commands += flat(planned_operations(valkey_plan, restart, PLAN, every_branch=True))
    assert any("check-config" in c for c in commands)
    assert any(c.startswith("kill 4242 &&") for c in commands), commands
    assert_quoted(commands, {"vpq": prefix})


# --- the checks (testinfra) --------------------------------------------------------------


class RecordingHost:
    """A testinfra host that records each command as testinfra would quote it."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.commands: list[str] = []

    def run_expect(self, expected: list[int], command: str, *args: str) -> SimpleNamespace:
        self.commands.append(BaseBackend.quote(command, *args))
        reply = next((out for word, out in self.replies.items() if word in self.commands[-1]), "")
        return SimpleNamespace(rc=0, stdout=reply)

    def file(self, path: str) -> SimpleNamespace:
        return SimpleNamespace(exists=True, user="valkey", mode=0o600, content_string="user x")


def hostile_instance(value: str) -> SimpleNamespace:
    run = f"/run/{value}"
    paths = SimpleNamespace(
        unixsocket=f"{run}/sock",
        pidfile=f"{run}/pid",
        aclfile=f"/etc/{value}.acl",
        auth_file=lambda user: f"/var/lib/{value}/{user}",
    )
    return SimpleNamespace(name="cache", paths=paths)


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_checks_pass_paths_through_testinfra_quoting(value):
    from checks import test_host
    from checks.conftest import Valkey

    host = RecordingHost({"WHOAMI": "checks", "PING": "NOAUTH", "ps -o": "valkey", "cat ": "4242"})
    inst = hostile_instance(value)
    plan = SimpleNamespace(acl=True, instances=[inst])
    Valkey(host, inst, acl=True).cli("CONFIG", "GET", value)
    Valkey(host, inst, acl=False).cli("PING")
    test_host.test_instances_run_as_valkey(host, plan)
    test_host.test_acl_users_on_and_default_user_off(
        host, plan, lambda i: Valkey(host, i, acl=True)
    )
    assert len(host.commands) == 6, host.commands
    assert_quoted(host.commands, {"vpq": value})


def test_config_checker_takes_a_candidate_path_with_blanks_quotes_and_dollars():
    # As root the checker runs valkey-server as the valkey user, who must reach the file.
    scratch = Path(tempfile.mkdtemp(prefix="vp-quoting-", dir="/tmp"))
    try:
        scratch.chmod(0o777)
        folder = scratch / "a b $HOME 'c' \"d\" ;e `f`"
        folder.mkdir(mode=0o755)
        candidate = folder / "candidate.conf"

        def check(text: str) -> subprocess.CompletedProcess[str]:
            candidate.write_text(text)
            candidate.chmod(0o644)
            checker = str(TEMPLATE_DIR / "check-config.sh")
            env = {**os.environ, "HOME": "/nonexistent"}
            return subprocess.run(
                ["sh", checker, str(candidate)], capture_output=True, text=True, env=env
            )

        done = check("loglevel notice\n")
        assert done.returncode == 0, done.stderr
        done = check("no-such-directive yes\n")
        assert done.returncode == 1 and "no-such-directive" in done.stderr, done.stderr
        # a TLS candidate: the checker must find it is one (grep of the candidate's
        # path) and so make valkey-server load, and here miss, its certificates
        missing = "".join(f"tls-{k}-file /nonexistent/{k}\n" for k in ("cert", "key", "ca-cert"))
        done = check(f"tls-port 0\n{missing}")
        assert done.returncode == 1 and "/nonexistent/cert" in done.stderr, done.stderr
    finally:
        subprocess.run(["rm", "-rf", "--", str(scratch)], check=True)


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_the_deploy_and_the_checks_run_one_valkey_cli_command_line(value):
    """One builder: testinfra's quoting of `cli_format` gives pyinfra's `valkey_cli`, and
    the password only ever comes from the file, read on the host."""
    from valkey_plans.deploy.valkey_cli import cli_format, valkey_cli

    where = {"socket": f"/run/{value}/sock", "auth_file": f"/var/lib/{value}/checks"}
    for login in ({}, where, {**where, "user": "checks"}):
        args = ("CONFIG", "GET", value)
        checks = BaseBackend.quote(*cli_format(None, *args, **login))
        assert checks == shell_text(valkey_cli(None, *args, **login))
        assert_quoted([checks], {"vpq": value})
    assert checks.startswith(f'REDISCLI_AUTH="$(cat {shlex.quote(where["auth_file"])})" ')
