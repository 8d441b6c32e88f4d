"""Reach a planned instance from the machine running verify/audit: address, tunnel, login.

The instances listen on loopback (or private addresses) of their host. From the
controller, `local://` targets are reached directly; `ssh://` targets through an
SSH local port forward (`ssh -N -L`) built from the same settings testinfra and
pyinfra use (user, port, identity file, ssh config), so the audit needs nothing
installed on the host and never opens a Valkey port to the network.

Logins come from the controller's secrets (the ones the deploy hashed into the
ACL file): read-only `checks` for the audit, `api` for the cache canary.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, unquote, urlsplit

import valkey

from valkey_plans.plan import Instance, Plan
from valkey_plans.plan.secrets import load_secrets

ClientForDb = Callable[[int], valkey.Valkey]


def login(plan: Plan, user: str) -> tuple[str | None, str | None]:
    """(username, password) for `user`, or (None, None) where the plan has no ACLs."""
    if not plan.acl:
        return None, None
    secrets = load_secrets(plan.secrets_file, generate=False)
    return user, secrets[user].get_secret_value()


def ssh_forward_command(url: str, local_port: int, address: str, port: int) -> list[str]:
    """The `ssh -N -L` command that forwards 127.0.0.1:local_port to address:port on `url`."""
    parts = urlsplit(url)
    if parts.scheme not in ("ssh", "paramiko"):
        raise ValueError(f"{url}: only ssh:// hosts are reached through a tunnel")
    query = parse_qs(parts.query)
    # A connection of its own (never a shared master's): the forward ends with this process.
    cmd = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"]
    cmd += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    if "ssh_config" in query:
        cmd += ["-F", query["ssh_config"][0]]
    if "ssh_identity_file" in query:
        cmd += ["-i", query["ssh_identity_file"][0]]
    if parts.port:
        cmd += ["-p", str(parts.port)]
    if parts.username:
        cmd += ["-l", unquote(parts.username)]
    # `--`: a host name is never read as an ssh option (argv, no shell: nothing to quote)
    cmd += ["-L", f"127.0.0.1:{local_port}:{address}:{port}", "--", str(parts.hostname)]
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tunnel(url: str, address: str, port: int, timeout: float = 15.0) -> Iterator[int]:
    """Forward a free local port to address:port on the SSH host `url`; yields the local port."""
    local = _free_port()
    proc = subprocess.Popen(
        ssh_forward_command(url, local, address, port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise ConnectionError(f"ssh tunnel to {url} for {address}:{port} failed: {err}")
            try:
                socket.create_connection(("127.0.0.1", local), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        f"ssh tunnel to {url} did not open within {timeout}s"
                    ) from None
                time.sleep(0.05)
        yield local
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _clients(
    host: str, port: int, username: str | None, password: str | None, name: str
) -> ClientForDb:
    pools: dict[int, valkey.Valkey] = {}

    def client_for_db(db: int) -> valkey.Valkey:
        if db not in pools:
            pools[db] = valkey.Valkey(
                host=host,
                port=port,
                db=db,
                username=username,
                password=password,
                client_name=name,
                socket_timeout=30,
                socket_connect_timeout=10,
            )
        return pools[db]

    return client_for_db


@contextmanager
def instance_clients(
    url: str, plan: Plan, inst: Instance, user: str = "checks", name: str = "valkey-plans:audit"
) -> Iterator[ClientForDb]:
    """valkey-py clients (one per db) for `inst` of the host `url`, logged in as `user`.

    The one connection factory of the audit and the canary. A TLS-only instance has
    no plain port to reach; those are refused with a message (see the report).
    """
    if inst.tls and inst.tls.only:
        raise ConnectionError(
            f"{inst.name}: TLS-only instance; the audit reaches plain ports only"
            " (give it a loopback plain port, or run the audit on the host)"
        )
    username, password = login(plan, user)
    if url.startswith("local://"):
        yield _clients(inst.client_address, inst.port, username, password, name)
        return
    with tunnel(url, inst.client_address, inst.port) as local:
        yield _clients("127.0.0.1", local, username, password, name)


def host_url(host: object) -> str:
    """The testinfra URL of a testinfra `host` (what `instance_clients` needs)."""
    backend = host.backend  # type: ignore[attr-defined]
    if backend.NAME == "local":
        return "local://"
    spec = backend.host
    netloc = f"{spec.user}@{spec.name}" if spec.user else spec.name
    if spec.port:
        netloc += f":{spec.port}"
    query = []
    if getattr(backend, "ssh_identity_file", None):
        query.append(f"ssh_identity_file={backend.ssh_identity_file}")
    if getattr(backend, "ssh_config", None):
        query.append(f"ssh_config={backend.ssh_config}")
    return f"ssh://{netloc}" + (f"?{'&'.join(query)}" if query else "")
