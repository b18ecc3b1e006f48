"""Process groups: every long-running child gets its own session, and is killed as a whole group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def kill_group(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    sig: int = signal.SIGKILL,
    grace: float = 0.0,
    wait: float = 10.0,
) -> None:
    """Signal ``proc``'s whole process group and reap ``proc``.

    With ``grace`` > 0, ``sig`` is sent first and SIGKILL follows if the group leader is still there after
    ``grace`` seconds. Output pipes are drained while waiting (``communicate``), so a full pipe cannot block
    the child. Never raises for a group that is already gone.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    if grace > 0 and sig != signal.SIGKILL:
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
        proc.communicate(timeout=wait)
