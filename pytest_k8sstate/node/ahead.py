"""A large iptables family read ahead of the node's other commands, and translated as soon as it is read.

A ``local`` node (a network namespace of this machine) whose iptables family (``iptables``/``ip6tables``,
the nf_tables variant) holds at least :data:`~pytest_k8sstate.node.iptfast.MIN_CHAINS` chains is read by
the dumper (:mod:`~pytest_k8sstate.node.nfdump`), which needs a fifth of a second of CPU for 2,000
kube-proxy Services. :func:`start` runs that read in a thread of its own as soon as the capture knows the
family is to be read (after :func:`~pytest_k8sstate.node.reuse.plan`), and the translation
(:func:`~pytest_k8sstate.node.iptfast.translate_or_fallback`) right after it, in the same thread. So the
read no longer waits for the ``nft`` listing to be planned (:mod:`~pytest_k8sstate.node.nftomit`, an
in-process chain dump) nor the translation for the node's other commands.

At most as many of these reads run at once in a process as it may use CPUs (:data:`_SLOTS`): three nodes
dumping on two cores all end late and together, and their translations, one at a time under the GIL,
then queue at the end; with the slots, one node is translated while the next one is read. Node
containers (kind) are left to their batch (their long-lived shell runs the dumper more cheaply than a
``docker exec`` of its own).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast

from pytest_k8sstate.errors import CommandTimeout
from pytest_k8sstate.node import iptfast, netnsio, rulecache
from pytest_k8sstate.node.exec import DockerExec, NodeExec

__all__ = ["Ahead", "families", "start"]

R = TypeVar("R")
T = TypeVar("T")


def _cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's cpuset, ``taskset``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_SLOTS = threading.BoundedSemaphore(_cpus())
"""The reads that may run at once in this process (see the module doc)."""


class Ahead(Generic[R, T]):
    """``read()`` (holding one of :data:`_SLOTS`) then ``finish(what it read)``, in a daemon thread."""

    def __init__(self, name: str, read: Callable[[], R], finish: Callable[[R], T], timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._read: Future[R] = Future()
        self._finish: Future[T] = Future()
        threading.Thread(
            target=self._work, args=(read, finish), name=f"k8ss-ahead-{name}", daemon=True
        ).start()

    def _work(self, read: Callable[[], R], finish: Callable[[R], T]) -> None:
        try:
            slot = _SLOTS.acquire(timeout=self.timeout)  # at worst it reads without one
            try:
                got = read()
            finally:
                if slot:
                    _SLOTS.release()
        except BaseException as exc:
            self._read.set_exception(exc)
            self._finish.set_exception(exc)
            return
        self._read.set_result(got)
        try:
            self._finish.set_result(finish(got))
        except BaseException as exc:
            self._finish.set_exception(exc)

    def _wait(self, f: Future[Any]) -> Any:
        limit = 2 * self.timeout + 5  # one timeout waiting for a slot, one for the read
        try:
            return f.result(timeout=limit)
        except TimeoutError:
            raise CommandTimeout(f"{self.name}: not read within {limit:g}s") from None

    def read(self) -> R:
        """What ``read()`` returned (raises what it raised; :class:`~pytest_k8sstate.errors.CommandTimeout`
        when it is not done in twice the timeout)."""
        return cast(R, self._wait(self._read))

    def finished(self) -> T:
        """What ``finish()`` returned (raises what it, or ``read()``, raised)."""
        return cast(T, self._wait(self._finish))


def families(exec: NodeExec, cmds: Iterable[str], timeout: float) -> list[str]:
    """The iptables families among ``cmds`` to read ahead on ``exec``: those of at least
    :data:`~pytest_k8sstate.node.iptfast.MIN_CHAINS` chains (their tables' use counts, read in-process in
    well under a millisecond) on a node that is a network namespace of this machine."""
    fams = [c for c in cmds if c in iptfast.FAMILY]
    if not fams or isinstance(exec, DockerExec) or not iptfast.enabled():
        return []
    sizes = netnsio.iptables_sizes(exec, min(timeout, 10.0))
    if not sizes:
        return []
    return [c for c in fams if sizes.get(iptfast.FAMILY[c], 0) >= max(iptfast.MIN_CHAINS, 1)]


def start(
    exec: NodeExec,
    part: str,
    read: Callable[[], R],
    finish: Callable[[R], T],
    timeout: float,
    *,
    prefetch: bool,
) -> Ahead[R, T]:
    """Read ``part`` of ``exec`` ahead (``read``), then ``finish`` it; ``prefetch``: the process's rule
    translations are about to be used (:func:`~pytest_k8sstate.node.rulecache.prefetch`)."""
    if prefetch:
        rulecache.prefetch()
    return Ahead(f"node {exec.node} {part}", read, finish, timeout)
