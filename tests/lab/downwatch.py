"""Watch servers from outside while a deploy restarts them: which were down at each tick."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping

import valkey
from valkey.exceptions import ValkeyError


class DownWatch:
    """Pings every server every 20 ms from a thread; records which were down at each tick."""

    def __init__(self, clients: Mapping[Hashable, valkey.Valkey]) -> None:
        self.clients = dict(clients)
        self.ticks: list[set[Hashable]] = []
        self.times: list[float] = []  # time.monotonic() of each tick
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            down = set()
            for name, client in self.clients.items():
                try:
                    client.ping()
                except (ValkeyError, OSError):
                    down.add(name)
            self.times.append(time.monotonic())
            self.ticks.append(down)
            time.sleep(0.02)

    def overlapping(self) -> list[list[Hashable]]:
        """The ticks at which more than one server was down."""
        return [sorted(map(str, tick)) for tick in self.ticks if len(tick) > 1]

    def seen_down(self) -> set[Hashable]:
        return set().union(*self.ticks)

    def down_times(self, name: Hashable) -> list[float]:
        """When `name` was seen down (time.monotonic())."""
        return [t for t, tick in zip(self.times, self.ticks, strict=True) if name in tick]

    def __enter__(self) -> DownWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
