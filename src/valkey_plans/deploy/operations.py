"""pyinfra operations for Valkey: small generators that yield commands only on drift."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Generator, Mapping
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import files, systemd

from valkey_plans.deploy.valkey_cli import valkey_cli


@operation()
def checked_file(
    content: str,
    dest: str,
    checker: str | StringCommand | None = None,
    user: str | None = "valkey",
    group: str | None = "valkey",
    mode: str = "640",
    record: str | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Install a file only after a checker accepted it, so a bad file never goes live.

    + content: the rendered file
    + dest: where it lives
    + checker: command run with the candidate's path as its argument; non-zero keeps
      the old file (and the old running instance) and fails the operation. Shell text
      of the deploy's own (never plan data): quote anything else in a StringCommand
    + user, group, mode: ownership of the installed file (None: leave as created);
      each is quoted, as a plan's group may hold a space ("domain users")
    + record: keep a copy of what was installed here and compare against it instead of
      `dest`: for files the service itself rewrites (Sentinel's config, a watched
      instance's config after a failover), whose drift is the service's, not ours

    The candidate is uploaded beside `dest` (pyinfra's temp file too), so the
    directory's own permissions guard it until it has the final owner and mode, and the
    swap is a rename. Unlike `files.put`, this never prints the content, not even with
    `--diff`: it carries secrets (ACL hashes, app passwords).

    **Example:**

    .. code:: python

        checked_file(
            name="Valkey config",
            content=rendered,
            dest="/etc/valkey/valkey-cache.conf",
            checker="/usr/local/lib/valkey-plans/check-config",
        )
    """
    want = hashlib.sha256(content.encode()).hexdigest()
    have = host.get_fact(Sha256File, path=record or dest)
    if have != want:
        directory, name = posixpath.split(dest)
        candidate = posixpath.join(directory, f".{name}.candidate")
        temp = yield from _upload_temp(candidate)
        yield FileUploadCommand(StringIO(content), candidate, remote_temp_filename=temp)
        yield from _owned(candidate, user, group, mode)
        check = [checker, QuoteString(candidate), "&&"] if checker else []
        keep = ["cp", "-p", QuoteString(candidate), QuoteString(record), "&&"] if record else []
        yield StringCommand(*check, *keep, "mv", "-f", QuoteString(candidate), QuoteString(dest))
        return
    if record:
        host.noop(f"{dest}: as last deployed (recorded in {record})")
        return

    info = host.get_fact(File, path=dest) or {}
    fixes = list(
        _owned(
            dest,
            user if user and info.get("user") != user else None,
            group if group and info.get("group") != group else None,
            mode if str(info.get("mode")) != mode.lstrip("0") else None,
        )
    )
    yield from fixes
    if not fixes:
        host.noop(f"{dest} is up to date")


def _upload_temp(candidate: str) -> Generator[StringCommand, None, str]:
    """Where pyinfra's upload of `candidate` first lands, made private before it does.

    A root login uploads beside `dest`, guarded by the directory's own permissions. A
    login that escalates (`_sudo`, a non-root `ssh_user`) can only write where it may, so
    the upload lands in the temp directory, then sudo copies it beside `dest`: that file
    is created first, empty, 0600 and owned by the login (SFTP keeps an existing file's
    mode), under a random name, so a secret never sits readable by others there.
    """
    args = host.current_op_global_arguments or {}
    login = host.data.get("ssh_user")
    escalated = any(args.get(k) for k in ("_sudo", "_su_user", "_doas", "_dzdo"))
    if not (escalated and login and login != "root"):
        return host.get_temp_filename(candidate, temp_directory=posixpath.dirname(candidate))
    temp = host.get_temp_filename()
    yield StringCommand("install -m 600 -o", QuoteString(login), "/dev/null", QuoteString(temp))
    return temp


def _owned(
    path: str, user: str | None, group: str | None, mode: str | None
) -> Generator[StringCommand, None, None]:
    """chown, chgrp and chmod of `path`, for each of user, group, mode that is given."""
    for program, value in (("chown", user), ("chgrp", group), ("chmod", mode)):
        if value:
            yield StringCommand(program, QuoteString(value), QuoteString(path))


#: ACL LOAD segfaults a replica on Valkey before 8.0.3 (valkey-io/valkey#1842; Debian 12's
#: bookworm-backports ships 8.0.1). On a replica the file is applied user by user instead,
#: in one valkey-cli session (one login, so a rotated admin password cannot lock it out):
#: ACL DELUSER for live users the file no longer has, then ACL SETUSER NAME reset RULES
#: for each `user NAME RULES` line, which is what ACL LOAD would have made of the file.
REPLICA_ACL_APPLY = (
    "file=$(cli CONFIG GET aclfile | sed -n 2p); reply=$({ for u in $(cli ACL USERS); do"
    ' grep -q "^user $u " "$file" || echo "ACL DELUSER $u"; done;'
    " sed -n 's/^user \\([^ ]*\\)/ACL SETUSER \\1 reset/p' \"$file\"; } | cli 2>&1)"
)


@operation()
def acl_reload(
    socket: str, auth_file: str, user: str = "admin"
) -> Generator[StringCommand, None, None]:
    """
    Apply a changed aclfile to a running instance with `ACL LOAD`, without a restart.

    Valkey loads the whole file or nothing, so a bad file leaves the live users as
    they were. The password is read on the host from a root-only file: it never
    appears in a command line or in pyinfra's output.

    + socket: the instance's unix socket
    + auth_file: root-only file holding the password of `user`
    + user: an ACL user allowed to run ACL LOAD

    **Example:**

    .. code:: python

        acl_reload(
            name="ACL LOAD on cache",
            socket="/run/valkey-cache/valkey-server.sock",
            auth_file="/var/lib/valkey-plans/auth/cache/admin",
            _if=acl.did_change,
        )
    """
    cli = valkey_cli(None, StringCommand('"$@"'), socket=socket, auth_file=auth_file, user=user)
    yield StringCommand(
        "cli() { ",
        cli,
        "; }; if cli INFO replication | grep -q '^role:slave'; then ",
        REPLICA_ACL_APPLY,
        '; else reply=$(cli ACL LOAD 2>&1); fi; echo "$reply";',
        ' [ -n "$reply" ] && ! printf "%s\\n" "$reply" | grep -qvE "^(OK|[0-9]+)$"',
        _separator="",
    )


def unsupported_os(description: str) -> OperationError:
    return OperationError(
        f"valkey-plans cannot install Valkey on {description}; supported: Debian 12"
        " (bookworm-backports), Debian 13 and later, Ubuntu 24.04 and later, macOS (Homebrew)"
    )


#: Where the deploy's own systemd units live.
SYSTEMD_DIR = "/etc/systemd/system"


def root_only_directory(path: str) -> None:
    """A directory only root can enter: state, passwords and env files go below it."""
    files.directory(
        name=f"Root-only directory {path}", path=path, user="root", group="root", mode="700"
    )


def systemd_units(units: Mapping[str, str], label: str) -> list:
    """The deploy's unit files (name -> content), and systemd reading them once when any
    changed; the returned operations say whether a unit changed (for restarts)."""
    ops = [
        checked_file(
            name=f"{label} {name}",
            content=content,
            dest=f"{SYSTEMD_DIR}/{name}",
            user="root",
            group="root",
            mode="644",
        )
        for name, content in units.items()
    ]
    systemd.daemon_reload(
        name=f"systemd reads the {label.lower()}s", _if=lambda: any(op.did_change() for op in ops)
    )
    return ops
