"""Repository-wide test configuration.

A safety net for the hard rule "clean up everything you start": at the end of the session, any
``k8ss-*`` network namespace that did not exist when the session started is reported as a leak
(unless ``--k8sstate-keep-cluster`` asked to keep clusters).
"""

from __future__ import annotations

import signal

import pytest

from pytest_k8sstate.node import netns

_BEFORE_KEY = pytest.StashKey[set[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_BEFORE_KEY] = set(netns.list_ours())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    before = config.stash.get(_BEFORE_KEY, set())
    leaked = sorted(set(netns.list_ours()) - before)
    if leaked and not config.getoption("--k8sstate-keep-cluster", default=False):
        terminalreporter.write_sep("=", "k8sstate: leaked network namespaces", red=True)
        terminalreporter.write_line("tests left these namespaces behind: " + ", ".join(leaked))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Ctrl-C tests need SIGINT to reach the processes they start. A shell that starts a job in the
    background without job control (``cmd &`` in a script, ``nohup``) makes it ignore SIGINT, and
    ignored signals are inherited across exec: Python children then never raise KeyboardInterrupt.
    Catching it here again (Python's own handler) gives every child the default disposition back."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
