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
from pathlib import Path

from valkey_plans.plan.render import TEMPLATE_DIR


def test_a_cluster_candidate_passes_while_port_10000_is_taken():
    # Not under pytest's 0700 tmp root: the checker reads the candidate as valkey.
    where = Path(tempfile.mkdtemp(prefix="vp-check-"))
    where.chmod(0o755)
    candidate = where / "node.conf"
    candidate.write_text("bind 127.0.0.1\nport 7000\ncluster-enabled yes\n")
    candidate.chmod(0o644)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 10000))
        taken.listen()
        checked = subprocess.run(
            ["sh", str(TEMPLATE_DIR / "check-config.sh"), str(candidate)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    shutil.rmtree(where)
    assert checked.returncode == 0, checked.stderr


def test_a_setting_this_valkey_does_not_know_is_refused_naming_its_version():
    """A plan's `extra_config` written for a newer Valkey (or misspelt) never goes live:
    the checker's refusal names the version of the host's Valkey and what to look at."""
    version = (
        subprocess.run(["valkey-server", "--version"], capture_output=True, text=True, check=True)
        .stdout.split("v=")[1]
        .split()[0]
    )
    where = Path(tempfile.mkdtemp(prefix="vp-check-"))
    where.chmod(0o755)
    candidate = where / "cache.conf"
    candidate.write_text("bind 127.0.0.1\nport 6379\nsetting-of-valkey-99 yes\n")
    candidate.chmod(0o644)
    checked = subprocess.run(
        ["sh", str(TEMPLATE_DIR / "check-config.sh"), str(candidate)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    shutil.rmtree(where)
    assert checked.returncode == 1
    assert f"valkey-server {version} rejected {candidate}" in checked.stderr, checked.stderr
    assert "setting-of-valkey-99" in checked.stderr
    assert f"Valkey {version} does not know a setting above" in checked.stderr
