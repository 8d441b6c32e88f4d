"""checked_file through a login that escalates: where the upload lands before sudo moves it.

A root login uploads beside the destination (its directory guards the file). A sudo
login cannot write there (the lab's production walkthrough as `ops` was refused), so
its upload lands in the temp directory, in a file made 0600 and the login's own first:
a secret is never readable by other users on its way.
"""

from __future__ import annotations

from pyinfra.api import FileUploadCommand

from tests.unit.pyinfra_commands import linux_facts, planned_operations, shell_text
from valkey_plans.deploy.operations import checked_file

DEST = "/var/lib/valkey-plans/backup/restic-password"


def _deploy() -> None:
    checked_file(name="secret", content="s3cret", dest=DEST, user="root", group="root", mode="600")


def _commands(data: dict) -> list:
    return [c for _, cmds in planned_operations(_deploy, linux_facts(), data, "db-1") for c in cmds]


def test_a_sudo_login_uploads_into_its_own_private_temp_file():
    commands = _commands({"ssh_user": "ops", "_sudo": True})
    upload = next(c for c in commands if isinstance(c, FileUploadCommand))
    temp = upload.remote_temp_filename
    assert temp.startswith("/tmp/pyinfra-") and upload.dest.endswith(".restic-password.candidate")
    texts = [shell_text(c) for c in commands]
    made = texts.index(f"install -m 600 -o ops /dev/null {temp}")
    assert made < commands.index(upload)
    assert not any("s3cret" in t for t in texts)


def test_a_root_login_uploads_beside_the_destination():
    commands = _commands({"ssh_user": "root"})
    upload = next(c for c in commands if isinstance(c, FileUploadCommand))
    assert upload.remote_temp_filename.startswith("/var/lib/valkey-plans/backup/pyinfra-")
    assert not any(shell_text(c).startswith("install -m 600") for c in commands)
