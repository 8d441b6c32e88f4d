"""A real iovalkey (Node.js) client for the tests, and the README's recipe for it.

iovalkey is installed with npm once into the venv (`.venv/iovalkey-test/`) and reused;
./vp installs nodejs and npm on CI. The README's Node.js snippet is the code the tests
run, so a recipe that stops working fails a test instead of misleading a reader.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_DIR = Path(sys.prefix) / "iovalkey-test"
README = Path(__file__).resolve().parent.parent / "README.md"
#: The line of README.md just before the external hosted tier's Node.js snippet.
SNIPPET_AFTER = "A Node.js (iovalkey) application reads the same file"


def iovalkey() -> Path:
    """node_modules with iovalkey, installed by npm on first use (the registry is public)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed (./vp installs nodejs npm on CI)")
    if not (NODE_DIR / "node_modules" / "iovalkey").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), "iovalkey"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


def readme_snippet() -> str:
    """The README's Node.js snippet for the external hosted tier, as printed there."""
    text = README.read_text()
    start = text.index("```js\n", text.index(SNIPPET_AFTER)) + len("```js\n")
    return text[start : text.index("```", start)]


def env_of(path: Path) -> dict[str, str]:
    """A rendered env file as the variables `node --env-file` gives the app."""
    lines = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value for name, value in lines if not name.startswith("#")}


def run_node(script: str, env: dict[str, str], directory: Path) -> str:
    """Run `script` with iovalkey and `env`; fail naming the output unless it exits 0."""
    path = directory / "client.js"
    path.write_text(script)
    node_modules = iovalkey() / "node_modules"
    run = subprocess.run(
        ["node", str(path)],
        env={**os.environ, **env, "NODE_PATH": str(node_modules)},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output


#: Appended to the README's snippet (which defines `api` and `subscriber`): a pub/sub
#: round trip between the two workloads, then a key written, read back and removed.
ROUND_TRIP = r"""
const KEY = env.VP_TEST_KEY;
async function main() {
  await new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error("no pub/sub message within 10 s")), 10000).unref();
    subscriber.on("message", (channel, message) => { if (message === KEY) resolve(); });
    subscriber.subscribe(KEY).then(() => api.publish(KEY, KEY)).catch(reject);
  });
  console.log("PUBSUB ok");
  console.log("SET", await api.set(KEY, "from-node", "EX", 60));
  console.log("GET", await api.get(KEY));
  console.log("DEL", await api.del(KEY));
}
main().then(() => process.exit(0), (err) => { console.error("FAILED", err); process.exit(1); });
"""


def readme_round_trip(env: dict[str, str], directory: Path, key: str) -> None:
    """The README's recipe, with only `env` (the rendered settings): pub/sub, SET, GET, DEL."""
    output = run_node(readme_snippet() + ROUND_TRIP, {**env, "VP_TEST_KEY": key}, directory)
    for line in ("PUBSUB ok", "SET OK", "GET from-node", "DEL 1"):
        assert line in output, output
