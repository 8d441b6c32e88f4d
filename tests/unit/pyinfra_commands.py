"""The commands pyinfra would run on a host we cannot reach, given the facts it reports.

pyinfra's own operation tests work this way (facts in, commands out). It is only for
hosts this project cannot run (macOS laptops); every Linux path runs for real.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_host, ctx_inventory, ctx_state


def planned_commands(
    deploy: Callable[[], None], facts: Mapping[type, Any], host_data: dict[str, Any]
) -> list[tuple[str, list[str]]]:
    """(operation name, shell commands) in execution order, as on a first run with `facts`."""
    inventory = Inventory((["laptop.local"], host_data))
    state = State(inventory=inventory, config=Config())
    host = inventory.get_host("laptop.local")
    asked: list[str] = []

    def get_fact(cls: type, *args: Any, **kwargs: Any) -> Any:
        asked.append(cls.__name__)
        if cls not in facts:
            raise KeyError(f"the test gives no value for fact {cls.__module__}.{cls.__name__}")
        value = facts[cls]
        return value(**kwargs) if callable(value) else value

    host.get_fact = get_fact  # the facts a Mac would report; nothing here connects
    with ctx_inventory.use(inventory):
        add_deploy(state, deploy, host=host)
    state.is_executing = True
    planned = []
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in state.get_op_order():
            planned.append(_execute(state, host, op_hash))
    return planned


def _execute(state: State, host: Any, op_hash: str) -> tuple[str, list[str]]:
    """Generate one operation's commands and mark it done, so later `_if=` checks see it."""
    op_data = state.get_op_data_for_host(host, op_hash)
    commands = [
        c.get_raw_value() if hasattr(c, "get_raw_value") else repr(c)
        for c in op_data.command_generator()
    ]
    op_data.operation_meta.set_complete(True, commands, CommandOutput([]))
    return ", ".join(state.op_meta[op_hash].names), commands
