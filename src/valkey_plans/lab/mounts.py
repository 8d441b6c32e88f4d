"""Overlay mounts of host roots, and finding the lab's mounts in /proc/mounts."""

from __future__ import annotations

from pathlib import Path

from valkey_plans.lab.run import run


def mounted_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(Path(point))
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount everything at or below `path` (lazily if a mount is still busy)."""
    for point in mounted_under(path):
        if run("umount", str(point), check=False).returncode != 0:
            run("umount", "--lazy", str(point))


def mount_overlay(lower: Path, upper: Path, work: Path, root: Path) -> None:
    """Mount a writable overlay of `lower` at `root`; host writes land in `upper`."""
    for directory in (upper, work, root):
        directory.mkdir(parents=True, exist_ok=True)
    run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={upper},workdir={work}",
        str(root),
    )
