"""The live progress line (:mod:`pytest_k8sstate.util.progress`) inside a pytest run.

The line goes to a duplicate of the file descriptor pytest's terminal reporter writes to, taken at
``pytest_configure`` (output capture is suspended then): writes to it are not captured while a fixture
creates a cluster, and they never touch the capture state from the ticker thread. At the start of a block
``prepare`` flushes the reporter (with capture suspended, in the caller's thread) and says whether its line
is unfinished (after ``-q``'s dots), so the first progress line starts on a new one. xdist workers get no
live line: their output is not the user's terminal (their permanent lines still reach the controller).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable

import pytest

from pytest_k8sstate.util.progress import Terminal, set_terminal

__all__ = ["live_terminal"]


def _prepare(config: pytest.Config) -> Callable[[], bool]:
    def prepare() -> bool:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return False
        capman = config.pluginmanager.get_plugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with ctx:
            reporter.flush()
        writer = getattr(reporter, "_tw", None)
        return bool(getattr(writer, "width_of_current_line", 0))

    return prepare


def live_terminal(config: pytest.Config) -> Callable[[], None]:
    """Point the live line at this session's terminal; returns the cleanup (restore, close)."""
    stream: io.TextIOWrapper | None = None
    if getattr(config, "workerinput", None) is None:
        try:
            fd = os.dup(sys.stdout.fileno())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            fd = -1  # no real stdout (an in-process run with a replaced sys.stdout): no live line
        if fd >= 0:
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            stream = open(fd, "w", encoding=encoding, errors="replace", closefd=True)
    previous = set_terminal(Terminal(stream, _prepare(config)))

    def cleanup() -> None:
        set_terminal(previous)
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    return cleanup
