"""What the benchmarks share: the checkout's root, progress lines, the state of the source."""

from __future__ import annotations

import os
import subprocess
import time

__all__ = ["REPO_ROOT", "log", "source_state"]

#: the root of the checkout: the children's working folder, where ``scripts/`` lies
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg: str) -> None:
    """A progress line on stdout, with the wall clock.

    Args:
        msg: the line, without the time stamp.
    """
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def source_state() -> str:
    """The commit of the checkout and whether ``geometry/`` has uncommitted changes.

    Returns:
        ``"<short hash>"``, with ``" + uncommitted changes in geometry/"`` when it has some, or
        ``"not a git checkout"``.
    """

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", REPO_ROOT, *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "geometry")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + (" + uncommitted changes in geometry/" if dirty else "")  # fmt: skip
