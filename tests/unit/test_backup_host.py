"""Root commands sent to a host: values are positional arguments, quoted once, no secret."""

from __future__ import annotations

import shlex

import pytest

from valkey_plans.backup.host import HostShell
from valkey_plans.backup.restore import HEADER, RestoreError, rdb_format, readable_format

AWKWARD = ["/srv/a b/c", "it's", "$(reboot)", "a;b", "--x"]


def test_local_arguments_reach_the_script_unchanged():
    result = HostShell().run('for a in "$@"; do printf "%s\\n" "$a"; done', *AWKWARD)
    assert result.ok and result.out.splitlines() == AWKWARD


def test_ssh_sends_one_remote_word_list_with_sudo_for_a_non_root_login():
    shell = HostShell("ssh://deploy@db-1:2222?ssh_identity_file=/k/id")
    argv = shell.argv("echo $1", *AWKWARD)
    assert argv[:2] == ["ssh", "-o"] and "-i" in argv and "2222" in argv
    assert argv[-3:-1] == ["--", "db-1"]
    assert shlex.split(argv[-1]) == ["sudo", "-n", "sh", "-c", "echo $1", "sh", *AWKWARD]


def test_ssh_as_root_needs_no_sudo():
    argv = HostShell("ssh://root@db-1").argv("true")
    assert shlex.split(argv[-1]) == ["sh", "-c", "true", "sh"]


@pytest.mark.parametrize(
    ("header", "fmt"), [("REDIS0011", 11), ("REDIS0009", 9), ("VALKEY080", 80)]
)
def test_rdb_headers(header: str, fmt: int):
    assert HEADER.fullmatch(header) and rdb_format(header) == fmt


def test_not_an_rdb_is_refused():
    with pytest.raises(RestoreError, match="not an RDB file"):
        rdb_format("GARBAGE!!")


@pytest.mark.parametrize(("version", "fmt"), [("8.0.1", 11), ("8.1.1", 11), ("9.0.0", 80)])
def test_readable_formats(version: str, fmt: int):
    assert readable_format(version) == fmt
