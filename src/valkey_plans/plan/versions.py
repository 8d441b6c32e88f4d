"""`valkey_version`: which Valkey a plan means on each OS, and where apt gets it.

Checked against Debian's archive: bookworm-backports has 8.0, trixie 8.1, forky 9.1.
Forky's 9.1 packages need nothing newer than trixie has (libc6 >= 2.38, libssl3t64), so
a trixie host gets 9.1 from forky with only Valkey's own packages pinned there; bookworm's
libc (2.36) is too old for it. Valkey 9 writes RDB format 80, which 8.x cannot read: a
downgrade is refused before anything changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: What `valkey_version` may say: a series ("8.1") or a major ("9": its newest series).
VERSION = re.compile(r"(8|9)(\.[0-9])?")
ALLOWED = "a Valkey series such as '8.1' or '9.1', or a major ('8', '9'): its newest series"


@dataclass(frozen=True)
class Source:
    """Where one Valkey series comes from on one OS."""

    series: str
    #: The apt suite to add (None: the OS's own sources have it).
    suite: str | None = None
    #: Only Valkey's packages come from `suite` (pinned), the rest stays the OS's own.
    pinned: bool = False


#: (OS name, major) -> the series it can run, its own first.
SERIES: dict[tuple[str, int], tuple[Source, ...]] = {
    ("Debian", 12): (Source("8.0", "bookworm-backports"),),
    ("Debian", 13): (Source("8.1"), Source("9.1", "forky", pinned=True)),
    ("Debian", 14): (Source("9.1"),),
}


class VersionError(ValueError):
    """A version this host cannot run, or cannot move to from what it runs."""


def check_version(value: str | None) -> str | None:
    """The plan model's check of `valkey_version` (the OS is checked at deploy time)."""
    if value is not None and not VERSION.fullmatch(str(value)):
        raise ValueError(f"valkey_version {value!r}; allowed: {ALLOWED}")
    return value


def series_of(package_version: str) -> str:
    """'8.1' of a Debian package version such as '8.1.1+dfsg1-3+deb13u3' (epoch dropped)."""
    upstream = package_version.split(":", 1)[-1]
    major, _, rest = upstream.partition(".")
    return f"{major}.{rest.partition('.')[0]}"


def _key(series: str) -> tuple[int, int]:
    major, _, minor = series.partition(".")
    return int(major), int(minor or 0)


def meets(series: str, wanted: str) -> bool:
    """Whether Valkey `series` ("9.1") is what `valkey_version` `wanted` ("9.1" or "9")
    asks for."""
    return wanted in (series, series.split(".")[0])


#: Debian's codenames by major: a testing or unstable host's os-release has no
#: VERSION_ID (forky today), so pyinfra finds no major and the codename tells it.
DEBIAN_CODENAMES = {"bookworm": 12, "trixie": 13, "forky": 14, "duke": 15}


def os_of(distro: Mapping[str, Any]) -> tuple[str, int]:
    """(name, major) of pyinfra's LinuxDistribution fact (0: unknown major), a Debian
    testing host known by its VERSION_CODENAME."""
    name = distro.get("name") or ""
    major = distro.get("major") or 0
    if not major and name == "Debian":
        codename = (distro.get("release_meta") or {}).get("VERSION_CODENAME") or ""
        major = DEBIAN_CODENAMES.get(codename, 0)
    return name, major


def _os_sources(os_name: str, major: int) -> tuple[Source, ...]:
    sources = SERIES.get((os_name, major))
    if sources is None and os_name == "Debian" and major > 14:
        sources = SERIES[("Debian", 14)]
    return sources or ()


def resolve(wanted: str | None, os_name: str, major: int, installed: str | None) -> Source | None:
    """The source of the series this host runs after the deploy.

    `wanted` is the plan's `valkey_version`; unset, the host keeps the series it has
    (`installed`, a package version), or gets its OS's own. None: an OS that valkey-plans
    installs only its own Valkey on (Ubuntu), with `wanted` unset.
    """
    sources = _os_sources(os_name, major)
    current = series_of(installed) if installed else None
    if wanted is None:
        keep = [s for s in sources if s.series == current]
        return (keep or list(sources[:1]) or [None])[0]
    fits = [s for s in sources if meets(s.series, wanted)]
    if not fits:
        offered = ", ".join(s.series for s in sources) or "none: leave valkey_version unset"
        raise VersionError(
            f"valkey_version {wanted!r} is not available on {os_name} {major}; allowed: {offered}"
        )
    chosen = max(fits, key=lambda s: _key(s.series))
    if current and _key(chosen.series) < _key(current):
        formats = " (Valkey 9 writes RDB format 80, which 8.x cannot read)" * (
            _key(current)[0] >= 9 > _key(chosen.series)[0]
        )
        raise VersionError(
            f"valkey_version {wanted!r} would downgrade Valkey {current} to"
            f" {chosen.series}{formats}; allowed: {current} or later. Nothing was changed"
        )
    return chosen
