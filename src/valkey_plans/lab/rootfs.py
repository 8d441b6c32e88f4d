"""The cached base root filesystem of each Debian release, built once by debootstrap.

Hosts never write to it: each host mounts an overlay over it. The cache key covers everything
that changes the result (release, variant, package list, mirror), so a changed package list
builds a new base instead of silently reusing an old one; old bases are kept until removed by
hand (`rm -rf LAB_DIR/rootfs`).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from valkey_plans.lab import config, mounts
from valkey_plans.lab.run import run


def cache_key(release: str) -> str:
    """A short digest of every input that shapes the base of `release`."""
    spec = "\n".join([release, config.VARIANT, ",".join(config.INCLUDE), config.MIRROR])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def base_path(release: str, base: Path) -> Path:
    """Where the base of `release` lives in the cache under lab dir `base`."""
    return base / "rootfs" / f"{release}-{cache_key(release)}"


def ensure(release: str, base: Path) -> Path:
    """Return the cached base of `release`, running debootstrap first if it is missing.

    debootstrap writes into a `.building` directory renamed into place only on success, so an
    interrupted build is never mistaken for a finished one (the next call starts it over).
    """
    if release not in config.RELEASES:
        raise ValueError(f"release {release!r} is not one of {', '.join(config.RELEASES)}")
    target = base_path(release, base)
    if (target / "usr/lib/os-release").exists():
        return target
    building = target.with_name(target.name + ".building")
    if building.exists():
        mounts.unmount_under(building)  # debootstrap mounts /proc etc. and may have died
        shutil.rmtree(building)
    building.parent.mkdir(parents=True, exist_ok=True)
    script = config.DEBOOTSTRAP_SCRIPTS / release
    run(
        "debootstrap",
        f"--variant={config.VARIANT}",
        f"--include={','.join(config.INCLUDE)}",
        release,
        str(building),
        config.MIRROR,
        *([] if script.exists() else [str(script.with_name("sid"))]),
    )
    _generalise(building)
    building.rename(target)
    return target


def _generalise(root: Path) -> None:
    """Drop what must differ per host (ssh host keys, machine id); each host writes its own."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    run("chroot", str(root), "apt-get", "clean")
