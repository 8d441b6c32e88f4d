"""CLUSTER NODES, parsed once for the deploy, the checks and the lab tests."""

from __future__ import annotations

from dataclasses import dataclass

#: Flags of a node the cluster cannot count on right now.
FAILING_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class Member:
    """One line of CLUSTER NODES."""

    id: str
    #: "IP:PORT" the node announces (the cluster bus port and hostname stripped).
    address: str
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[str, ...]

    @property
    def ip(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & FAILING_FLAGS)

    @classmethod
    def parse(cls, line: str) -> Member:
        fields = line.split()
        return cls(
            id=fields[0],
            address=fields[1].split("@")[0],
            flags=frozenset(fields[2].split(",")),
            primary_id=None if fields[3] == "-" else fields[3],
            slots=tuple(fields[8:]),
        )


def parse(text: str | list[str]) -> list[Member]:
    """Every member listed in CLUSTER NODES output (a string or its lines)."""
    lines = text.splitlines() if isinstance(text, str) else text
    return [Member.parse(line) for line in lines if line.strip()]
