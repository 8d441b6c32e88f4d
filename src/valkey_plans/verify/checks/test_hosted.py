"""An external hosted tier (`valkey_app.hosted`), proven from the application host.

The probe (`valkey_plans/verify/hosted_probe.py`, standard library only) runs on the
app host with the env file the deploy rendered and nothing else, so each check below
sees what the application will: the network path, the CA store or installed CA, the
logins. One probe per host; each check reads its own step, so a wrong password, an
untrusted certificate or an unreachable endpoint fails exactly one check, and the
checks after it are SKIP (could not decide), never a PASS or a second failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from valkey_plans.keys import new_txkey
from valkey_plans.plan import Plan
from valkey_plans.plan.secrets import hosted_secret_names
from valkey_plans.verify.audit_rules import CANARY_PREFIX
from valkey_plans.verify.report import not_applicable

PROBE = (Path(__file__).resolve().parents[1] / "hosted_probe.py").read_text()
#: Probe results per inventory host: the probe logs in and writes once per verify run.
_RESULTS: dict[str, dict[str, Any]] = {}


def _env_file(plan: Plan) -> str:
    return f"{plan.app.env_dir}/{plan.app.name}.env"


def _secrets(plan: Plan) -> str:
    """Where the hosted passwords come from, in the words of README's secrets table."""
    assert plan.app.hosted is not None
    names = hosted_secret_names(plan.app.hosted.login)
    shown = ", ".join(f"VALKEY_PLANS_SECRET_{n.upper()}" for n in names)
    where = f" or {plan.secrets_file}" if plan.secrets_file else ""
    return f"secret {'/'.join(names)} ({shown}{where})"


@pytest.fixture
def probe(host, plan: Plan) -> dict[str, Any]:
    """The probe's steps on this host; N/A where the plan names no external hosted tier."""
    if plan.app.hosted is None:
        not_applicable("no external hosted tier (valkey_app.hosted)")
    if plan.host not in _RESULTS:
        key = f"{CANARY_PREFIX}hosted:{new_txkey()}"
        run = host.run("python3 -c %s %s %s", PROBE, _env_file(plan), key)
        if run.rc != 0:
            pytest.fail(
                f"the hosted-tier probe could not run on the app host (python3 and the"
                f" settings file {_env_file(plan)} are needed; redeploy to write it):"
                f" {run.stderr.strip().splitlines()[-1:] or run.rc}"
            )
        _RESULTS[plan.host] = json.loads(run.stdout)
    return _RESULTS[plan.host]


def _step(probe: dict[str, Any], name: str) -> dict[str, Any]:
    """One step's result; SKIP when an earlier step failed, so it never ran."""
    if name not in probe:
        failed = next(step for step, result in probe.items() if not result["ok"])
        pytest.skip(f"not decided: test_hosted's {failed} step failed first")
    return probe[name]


def test_hosted_endpoint_reachable(probe, plan):
    step = probe["reach"]
    url = plan.app.hosted.url
    assert step["ok"], (
        f"cannot reach the hosted tier {url} from this host ({step['error']}): check"
        " valkey_app.hosted.url, the name's DNS, and that the service allows this host's"
        " address (firewall, the provider's allow-list)"
    )


def test_hosted_tls_verifies_certificate(probe, plan):
    hosted = plan.app.hosted
    step = _step(probe, "tls")
    if step.get("plain"):
        not_applicable(f"{hosted.url} is plain text (valkey://)")
    trust = "the system CAs" if hosted.tls_ca_file == "system" else hosted.tls_ca_file
    name = hosted.tls_server_name or "the url's host"
    fix = (
        f"the certificate is checked against {trust} and the name {name}: set"
        " valkey_app.hosted.tls_ca_file to the CA that signed the service's certificate"
        " (or tls_server_name to the name it carries) and deploy again"
    )
    if not step["ok"] and step.get("verify"):
        pytest.fail(f"the hosted tier's certificate is not trusted ({step['error']}): {fix}")
    assert step["ok"], (
        f"no TLS handshake with {hosted.url} ({step['error']}): is TLS on at that port?"
        " (valkeys:// means TLS; valkey:// plain text)"
    )


def test_hosted_workloads_log_in(probe, plan):
    step = _step(probe, "login")
    if step["ok"]:
        return
    hosted = plan.app.hosted
    workload, error = step["workload"], step["error"]
    if "whoami" in step:
        pytest.fail(
            f"workload {workload} {error}, but the plan says {step['user']!r}: check"
            f" valkey_app.hosted.login/user{'s' if hosted.login == 'per-workload' else ''}"
        )
    if error.startswith(("WRONGPASS", "ERR invalid password", "NOAUTH", "ERR AUTH")):
        token = hosted.login == "token"
        login = "AUTH token" if token else f"login as {step['user']!r}"
        pytest.fail(
            f"the hosted tier refused workload {workload}'s {login} ({error.split(' ', 1)[0]}):"
            f" set {_secrets(plan)} to the service's current {'token' if token else 'password'}"
            f"{'' if token else ' and check valkey_app.hosted.user(s)'}, then deploy again"
        )
    pytest.fail(f"workload {workload} could not log in to {hosted.url}: {error}")


def test_hosted_canary_key_round_trip(probe, plan):
    step = _step(probe, "canary")
    assert step["ok"], (
        f"a {CANARY_PREFIX} key on the hosted tier could not be written, read back and"
        f" removed as workload api ({step['error']}): the service must let the api user"
        f" read and write keys ({CANARY_PREFIX}* among them)"
    )


def test_hosted_pubsub_reaches_subscriber(probe, plan):
    step = _step(probe, "pubsub")
    assert step["ok"], (
        f"a PUBLISH on a {CANARY_PREFIX} channel did not reach the subscriber workload"
        f" ({step['error']}): the store's invalidation needs pub/sub on vp:* for the api"
        " (PUBLISH) and subscriber (SUBSCRIBE) users"
    )
