"""The config checker: a cluster candidate's throwaway server needs a bus port too, and a
setting the host's Valkey does not know is refused naming that Valkey's version.

With TCP off (`--port 0`) Valkey still binds the cluster bus at port + 10000 = 10000,
where another program (a node's exporter at 7000 + 3000, say) may listen; the checker
must give the bus a free port instead of rejecting a valid config.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from valkey_plans.plan.render import TEMPLATE_DIR


@contextmanager
def candidate(text: str) -> Iterator[Path]:
    """A candidate config with `text`, not under pytest's 0700 tmp root: the checker
    reads it as the valkey user."""
    where = Path(tempfile.mkdtemp(prefix="vp-check-"))
    where.chmod(0o755)
    path = where / "candidate.conf"
    path.write_text(text)
    path.chmod(0o644)
    try:
        yield path
    finally:
        shutil.rmtree(where)


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """The deploy's checker on `path`, as the deploy runs it on a host."""
    return subprocess.run(
        ["sh", str(TEMPLATE_DIR / "check-config.sh"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_cluster_candidate_passes_while_port_10000_is_taken():
    node = "bind 127.0.0.1\nport 7000\ncluster-enabled yes\n"
    with candidate(node) as path, socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 10000))
        taken.listen()
        checked = check(path)
    assert checked.returncode == 0, checked.stderr


def test_a_setting_this_valkey_does_not_know_is_refused_naming_its_version():
    """A plan's `extra_config` written for a newer Valkey (or misspelt) never goes live:
    the checker's refusal names the version of the host's Valkey and what to look at."""
    version = (
        subprocess.run(["valkey-server", "--version"], capture_output=True, text=True, check=True)
        .stdout.split("v=")[1]
        .split()[0]
    )
    with candidate("bind 127.0.0.1\nport 6379\nsetting-of-valkey-99 yes\n") as path:
        checked = check(path)
    assert checked.returncode == 1
    assert f"valkey-server {version} rejected {path}" in checked.stderr, checked.stderr
    assert "setting-of-valkey-99" in checked.stderr
    assert f"Valkey {version} does not know a setting above" in checked.stderr
