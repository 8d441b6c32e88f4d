"""A real iovalkey client (Node.js) connects cleanly with the deployed workload users.

Teams run iovalkey with `maxRetriesPerRequest: 3, enableReadyCheck: true`. Its ready
check runs INFO on every connection; a user without INFO makes it log "Skipping the
ready check because INFO command fails: NOPERM" and never wait for a loading server.
This starts a real valkey-server with the aclfile the deploy renders, gives a Node.js
script the variables of the rendered env file, and fails on that warning or any NOPERM.
"""

from __future__ import annotations

import json
import secrets

from pydantic import SecretStr

from tests.iovalkey_node import run_node
from tests.valkey_server import free_port
from valkey_plans.plan import Plan
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.render import acl_file, app_files
from valkey_plans.plan.secrets import ACL_USERS

#: Each workload as the application connects it: ready check on, the recipe's retries.
SCRIPT = r"""
const Valkey = require("iovalkey");
const env = process.env;
const options = (workload) => ({
  host: env.VALKEY_HOST, port: Number(env.VALKEY_PORT),
  username: env[`VALKEY_${workload}_USER`], password: env[`VALKEY_${workload}_PASSWORD`],
  connectionName: `${env.VALKEY_APP}:${workload.toLowerCase()}`,
  maxRetriesPerRequest: 3, enableReadyCheck: true, lazyConnect: true,
});
async function main() {
  for (const workload of ["API", "BLOCKING", "BACKGROUND"]) {
    const client = new Valkey(options(workload));
    await client.connect();
    console.log(workload, client.status, await client.ping());
    await client.quit();
  }
  const sub = new Valkey(options("SUBSCRIBER"));
  await sub.connect();
  console.log("SUBSCRIBER", sub.status, await sub.subscribe("vp:inval:users"));
  await sub.quit();
}
main().then(() => process.exit(0), (err) => { console.error("FAILED", err); process.exit(1); });
"""


def env_variables(text: str) -> dict[str, str]:
    """KEY=VALUE lines of the rendered env file (values may be JSON-quoted)."""
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            found[name] = json.loads(value) if value.startswith('"') else value
    return found


def test_iovalkey_connects_every_workload_without_noperm(valkey_factory, tmp_path) -> None:
    port = free_port()
    data = {
        "valkey_instances": [{"name": "hosted", "role": "primary", "port": port}],
        "valkey_app": {"name": "shop", "hosted_instance": "hosted", "cache_instance": None},
        "valkey_acl": True,
    }
    plan = Plan.from_host_data("h", data)
    passwords = {user: SecretStr(secrets.token_urlsafe(16)) for user in ACL_USERS}
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl_file(plan, plan.instance("hosted"), passwords))
    admin = ("admin", passwords["admin"].get_secret_value())
    valkey_factory("hosted", port=port, login=admin, aclfile=str(aclfile), databases="1")
    env = env_variables(app_files(plan, app_environment(plan, passwords))["shop.env"])
    assert env["VALKEY_PORT"] == str(port) and env["VALKEY_API_USER"] == "api"
    output = run_node(SCRIPT, env, tmp_path)
    assert "Skipping the ready check" not in output, output
    assert "NOPERM" not in output, output
    for workload in ("API", "BLOCKING", "BACKGROUND"):
        assert f"{workload} ready PONG" in output, output
    assert "SUBSCRIBER ready 1" in output, output
