"""Polling with a deadline: the probe says why it is not done yet; on timeout that reason is raised."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pytest_k8sstate.errors import K8sStateError

E = TypeVar("E", bound=K8sStateError)

#: exceptions a probe may raise that mean "not yet" (anything else propagates at once)
Transient = tuple[type[BaseException], ...]


def wait_until(
    what: str,
    probe: Callable[[], str | None],
    *,
    timeout: float | None = None,
    deadline: float | None = None,
    error: type[K8sStateError] = K8sStateError,
    transient: Transient = (),
    interval: float = 0.02,
    max_interval: float = 0.25,
    details: Callable[[], str] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Call ``probe`` until it returns None (done), else the reason it is not done yet.

    Exactly one of ``timeout`` (seconds from now) and ``deadline`` (``time.monotonic()`` value) is given. On
    timeout raises ``error("timed out waiting for WHAT after Ns: REASON")`` plus ``details()`` if given; it
    never returns as if done. ``check`` runs before each probe and may raise (e.g. a process that died).
    Exceptions listed in ``transient`` count as "not yet" with their text as the reason.
    """
    if (timeout is None) == (deadline is None):
        raise ValueError("wait_until takes exactly one of timeout= and deadline=")
    start = time.monotonic()
    end = start + timeout if timeout is not None else deadline
    assert end is not None
    delay = interval
    while True:
        if check is not None:
            check()
        try:
            reason = probe()
        except transient as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return
        now = time.monotonic()
        if now >= end:
            extra = f"\n{details()}" if details is not None else ""
            raise error(f"timed out waiting for {what} after {now - start:.1f}s: {reason}{extra}")
        time.sleep(min(delay, max(end - now, 0.0)))
        delay = min(delay * 1.5, max_interval)
