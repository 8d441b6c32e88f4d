"""The backup host (`valkey_backup.backup_host`): what it serves, and the key material.

A Valkey host's off-host repository lives on another inventory host, which the deploy
sets up: a system account `vpbackup` (nologin, its own 0700 home) owns the repositories;
on Debian 13 and later restic's rest-server runs as that account with `--append-only`
and `--private-repos` behind TLS, one htpasswd login per Valkey host, so a compromised
Valkey host can add backups but never delete one. Pruning runs on the backup host itself
(`templates/valkey-plans-prune.sh`), as the account, on the filesystem.

Every piece of key material two hosts must share is derived on the controller (the
machine running pyinfra) from one secret of the backup host's plan, `backup_server`,
with HMAC-SHA256 under a purpose label: each Valkey host's rest-server password, the
bcrypt salt of its htpasswd line, and the Ed25519 key of the TLS certificate (Ed25519
signs deterministically, so the certificate is the same bytes on every run). Nothing
is passed between hosts mid-run, nothing needs storing, a second deploy renders the
same files (and changes nothing), and a Valkey host, which only ever receives its own
derived password and the public certificate, cannot compute another host's login.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable

from pydantic import SecretStr

from valkey_plans.plan import Plan
from valkey_plans.plan.backup import STATE_DIR, clients_of, targets
from valkey_plans.plan.secrets import SERVER_SECRET, load_secrets

ACCOUNT = "vpbackup"
HOME = "/srv/valkey-backup"
#: rest-server's data directory: with --private-repos, Valkey host H owns REPOS/H/...
REPOS = f"{HOME}/restic"
REST_PORT = 8000
#: Not below /etc/valkey-plans: that is the application settings' directory, 0750 for
#: the application's group, which the account could not traverse.
CONF_DIR = "/etc/valkey-plans-backup-host"
HTPASSWD = f"{CONF_DIR}/htpasswd"
TLS_KEY = f"{CONF_DIR}/key.pem"
TLS_CERT = f"{CONF_DIR}/cert.pem"
REST_UNIT = "valkey-plans-rest-server.service"
REST_SERVER = "/usr/bin/restic-rest-server"
#: One directory per Valkey host: its repository password, one env file per instance.
PRUNE_DIR = f"{STATE_DIR}/prune"
PRUNER = "/usr/local/lib/valkey-plans/prune"
PRUNE_UNIT = "valkey-plans-prune.service"
PRUNE_TIMER = "valkey-plans-prune.timer"
#: bcrypt's cost for the htpasswd lines: the passwords are 256-bit random already, and
#: rest-server caches a good login for a minute.
BCRYPT_COST = 10
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def server_secret(backup_plan: Plan) -> SecretStr:
    """The backup host's `backup_server` secret, from its plan's secrets on the controller;
    generated only where that plan generates its secrets. Raises SecretsError."""
    found = load_secrets(
        backup_plan.secrets_file, backup_plan.secrets_generate, users=(SERVER_SECRET,)
    )
    return found[SERVER_SECRET]


def _derive(secret: SecretStr, purpose: str, subject: str) -> bytes:
    label = f"valkey-plans {purpose}\0{subject}".encode()
    return hmac.new(secret.get_secret_value().encode(), label, hashlib.sha256).digest()


def rest_password(secret: SecretStr, client: str) -> SecretStr:
    """Valkey host `client`'s rest-server password (URL-safe, 43 characters)."""
    raw = _derive(secret, "rest-server login", client)
    return SecretStr(base64.urlsafe_b64encode(raw).decode().rstrip("="))


def htpasswd(secret: SecretStr, clients: Iterable[str]) -> str:
    """The htpasswd file: one bcrypt line per Valkey host, its salt derived too, so that
    the same inventory renders the same file."""
    import bcrypt

    lines = []
    for client in clients:
        salt16 = _derive(secret, "rest-server bcrypt salt", client)[:16]
        encoded = base64.b64encode(salt16).decode().rstrip("=")
        salt = encoded.translate(str.maketrans(_STD_ALPHABET, _BCRYPT_ALPHABET))
        password = rest_password(secret, client).get_secret_value().encode()
        hashed = bcrypt.hashpw(password, f"$2b${BCRYPT_COST:02d}${salt}".encode()).decode()
        lines.append(f"{client}:{hashed}\n")
    return "# Managed by valkey-plans: rest-server logins (one per Valkey host)\n" + "".join(lines)


def tls_pair(secret: SecretStr, backup_plan: Plan) -> tuple[SecretStr, str]:
    """(private key PEM, self-signed certificate PEM) of the backup host's rest-server,
    for the address the Valkey hosts use; the Valkey hosts pin that certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = Ed25519PrivateKey.from_private_bytes(
        _derive(secret, "rest-server tls key", backup_plan.host)
    )
    address = backup_plan.address
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        alt = x509.DNSName(address)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"valkey-plans backups {address}")])
    serial = int.from_bytes(_derive(secret, "rest-server tls serial", address)[:16]) >> 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2125, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, None)
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SecretStr(pem.decode()), cert.public_bytes(serialization.Encoding.PEM).decode()


def rest_location(secret: SecretStr, backup_plan: Plan, client: str, instance: str) -> SecretStr:
    """The restic location of `client`'s repository of `instance`, its login included:
    it only ever goes into a root-only file (restic's --repository-file)."""
    password = rest_password(secret, client).get_secret_value()
    where = backup_plan.address
    host = f"[{where}]" if ":" in where else where
    return SecretStr(f"rest:https://{client}:{password}@{host}:{REST_PORT}/{client}/{instance}")


def served(plans: list[Plan], backup_plan: Plan) -> list[tuple[Plan, list[str]]]:
    """(Valkey host's plan, its backed-up instances) for each host `backup_plan` serves."""
    return [(p, [i.name for i in targets(p, plans)]) for p in clients_of(plans, backup_plan.host)]
