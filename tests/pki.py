"""A throwaway certificate authority and server certificates, made with `openssl`.

Tests that need TLS make their own CA per run, so no test trusts anything real and an
"untrusted certificate" is simply one signed by a second throwaway CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """A CA and one server certificate it signed (PEM files in `directory`)."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(directory: Path, name: str, dns: tuple[str, ...], ips: tuple[str, ...] = ()) -> Pki:
    """A CA called `name` and a server certificate for `dns` names and `ips`, 2 days.

    Both carry the extensions RFC 5280 asks for (key usage; the CA's basic constraints and
    key identifiers), which Python 3.13 and later check by default (VERIFY_X509_STRICT):
    a lab host on trixie or forky refuses a CA without key usage, as a real one would."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    cert, key = directory / f"{name}-server.crt", directory / f"{name}-server.key"
    csr, ext = directory / f"{name}-server.csr", directory / f"{name}-server.ext"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name} test CA", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={dns[0]}",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    names = [f"DNS:{n}" for n in dns] + [f"IP:{ip}" for ip in ips]
    ext.write_text(
        f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    key.chmod(0o644)  # the valkey user (a lab host) must read it; the key is a throwaway
    return Pki(ca=ca, cert=cert, key=key)
