"""Follow a ``local`` node's iptables-nft tables between captures: which chains changed since the last one.

A large iptables ruleset (kube-proxy's rules for thousands of Services) changes a few chains at a time:
one Service scaled rewrites its ``KUBE-SVC-`` chain and adds or removes ``KUBE-SEP-`` chains. Reading
and translating every rule again for that (:mod:`~pytest_k8sstate.node.nfdump`,
:mod:`~pytest_k8sstate.parse.iptnft`) costs a third of a second per node at 2,000 Services.

The kernel says what changed: every committed nf_tables transaction is announced to the sockets that
joined the ``NFNLGRP_NFTABLES`` group (what ``nft monitor`` prints) — each rule and chain added or
deleted, with its table and chain, then a ``NEWGEN`` message with the new ruleset generation. A
:class:`Monitor` is such a socket, opened in the node's namespace *before* the generation that the
capture reading the whole ruleset starts from, and kept; it records each transaction as (generation,
chains). At the next capture, :func:`changed_chains` names the chains changed after the generation the
previous translation was read at, up to the node's generation now (once its announcement arrived, so
nothing committed up to the state read is missed); :func:`read_chains` reads just those, at that
generation. The capture patches the previous translation with them
(:func:`~pytest_k8sstate.parse.iptnft.patch`). Nothing is used up: two captures of one node, each
from its own previous record, each get the chains they need.

Anything this cannot account for exactly makes the caller read everything as before: lost
announcements (a full socket buffer: ``ENOBUFS``), a user chain updated rather than created (a rename),
a table created or deleted, sets, objects or flowtables in an iptables table, a generation whose
announcement does not arrive in time, a ruleset that changes while the chains are read (the whole list:
docs/capture-nft.md). Chains that did not change keep their rule counters from the
read that last saw them, as a large ruleset reused whole does
(:data:`~pytest_k8sstate.node.reuse.LARGE_CHAINS`).

Only for network namespaces of this machine that the project names (``local`` nodes) with a large
iptables family: a socket keeps its namespace alive, so :func:`close` runs before the project deletes
one (:func:`pytest_k8sstate.node.netns.delete`), every monitor whose namespace is gone or replaced is
closed by the next :func:`monitor_for`, and all of them at exit. ``K8SSTATE_NFT_MONITOR=0`` turns this off.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import os
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pytest_k8sstate.node import netnsio, nfdump
from pytest_k8sstate.node.exec import NetnsExec, NodeExec
from pytest_k8sstate.parse.iptnft import BUILTIN_CHAINS

__all__ = [
    "ENV",
    "Monitor",
    "announced",
    "changed_chains",
    "close",
    "close_all",
    "close_node",
    "enabled",
    "monitor_for",
    "read_chains",
]

ENV = "K8SSTATE_NFT_MONITOR"
_NFNLGRP_NFTABLES = 7
_SO_RCVBUFFORCE = 33
_RCVBUF = 1 << 25  # 32 MiB: a full kube-proxy resync of 10,000 Services is about 100k announcements
_NEWTABLE, _DELTABLE, _NEWCHAIN, _DELCHAIN, _NEWRULE, _DELRULE, _NEWGEN = 0, 2, 3, 5, 6, 8, 15
_TABLES = frozenset(BUILTIN_CHAINS)
_WHOLE = ("", "")
"""In a family's changed chains: announcements this module cannot account for chain by chain."""
_lock = threading.Lock()


def enabled() -> bool:
    """False when ``$K8SSTATE_NFT_MONITOR`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_MAX_BATCHES = 4096
_MAX_ENTRIES = 200_000
"""Announced transactions (and chains in them) remembered per node; a translation older than the oldest
forgotten one is read again in full."""
_NLM_F_EXCL = 0x200
_DRAIN_LIMIT = 5.0
_serials = itertools.count(1)

Chains = dict[int, set[tuple[str, str]]]
"""Address family → (table, chain) of its iptables tables; :data:`_WHOLE` in a family's set: the
announcements cannot be accounted for chain by chain; (table, ``""``): the table was announced (created
or updated)."""


def after(a: int, b: int) -> bool:
    """Whether generation ``a`` comes after ``b`` (generations count up, modulo 2**32)."""
    return a != b and (a - b) % (1 << 32) < (1 << 31)


@dataclass
class Monitor:
    """A socket in a node's namespace that receives its nf_tables announcements.

    Nothing is consumed: each committed transaction is kept as (its generation, the chains it touched),
    so every capture of the node asks for the chains changed since the generation *its* previous
    translation was read at (concurrent captures of one node each get the right answer)."""

    path: str
    ns: tuple[int, int]
    sock: socket.socket
    floor: int
    """Every transaction after this generation was announced (the socket was opened, or announcements
    were lost or forgotten, before the next one)."""
    serial: int = field(default_factory=lambda: next(_serials))
    """Tells monitors apart: a translation is patched only with the announcements of the monitor that
    was open when it was read (a namespace recreated under the same name and inode is another one)."""
    batches: deque[tuple[int, Chains]] = field(default_factory=deque)
    current: Chains = field(default_factory=dict)
    """The chains of the transaction being announced (its generation comes last)."""
    entries: int = 0
    last_gen: int | None = None
    lost: bool = False
    """Announcements were dropped: nothing is known until the next generation is announced (which
    becomes :attr:`floor`)."""
    floor_partial: bool = False
    """The :attr:`floor` transaction's own announcements are not all recorded (it ended a loss, or was
    forgotten): a translation that may miss part of that transaction cannot be patched."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drain(self, limit: float = _DRAIN_LIMIT) -> None:
        """Read every announcement waiting in the socket (call with :attr:`lock` held); what is still
        queued after ``limit`` seconds (a ruleset changing faster than it is read) counts as lost."""
        deadline = time.monotonic() + limit
        while True:
            if time.monotonic() >= deadline:
                self._lose(deadline + limit)
                return
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: announcements dropped (and more while the queue was full)
                self._lose(deadline + limit)
                if exc.errno == errno.ENOBUFS:
                    continue
                return  # the socket is closed or broken: nothing more comes (a full read each time)
            if not data:
                return
            self._take(data)

    def _lose(self, deadline: float) -> None:
        self.lost = True
        self.batches.clear()
        self.current = {}
        self.entries = 0
        while time.monotonic() < deadline:  # what is still queued is part of the gap
            try:
                if not self.sock.recv(1 << 20):
                    return
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    return

    def _take(self, data: bytes) -> None:
        pos = 0
        while pos + 20 <= len(data):
            length, mtype, flags = struct.unpack_from("=IHH", data, pos)
            if length < 20 or pos + length > len(data):
                self._lose(time.monotonic() + _DRAIN_LIMIT)
                return
            msg = data[pos : pos + length]
            pos += (length + 3) & ~3
            if mtype >> 8 != nfdump._NFNL_SUBSYS_NFTABLES:
                continue
            kind, fam = mtype & 0xFF, msg[16]
            if kind == _NEWGEN:
                gen = nfdump._attr_raw(msg, 1)
                if len(gen) >= 4:
                    self._close_batch(int.from_bytes(gen[:4], "big"))
                continue
            if fam not in _FAMILIES:
                continue  # inet, arp, bridge, netdev tables: never in the iptables parts
            table = sys.intern(nfdump._attr_value(msg, 1).decode("utf-8", "replace"))
            if table not in _TABLES:
                continue
            chains = self.current.setdefault(fam, set())
            if kind in (_NEWRULE, _DELRULE):
                chains.add((table, sys.intern(nfdump._attr_value(msg, 2).decode("utf-8", "replace"))))
            elif kind in (_NEWCHAIN, _DELCHAIN):
                name = sys.intern(nfdump._attr_value(msg, 3).decode("utf-8", "replace"))
                if kind == _NEWCHAIN and not flags & _NLM_F_EXCL and name not in BUILTIN_CHAINS[table]:
                    chains.add(_WHOLE)  # a user chain updated, not created: a rename (-E) changes
                else:  # the rules that jump to it too, and announces neither them nor the old name
                    chains.add((table, name))
            elif kind == _NEWTABLE:
                chains.add((table, ""))  # created (a new table: read in full) or updated
            else:  # a table deleted; a set, object or flowtable in an iptables table
                chains.add(_WHOLE)

    def _close_batch(self, gen: int) -> None:
        self.last_gen = gen
        if self.lost:  # this transaction may have lost some of its announcements: it is the new floor
            self.lost, self.floor, self.floor_partial, self.current = False, gen, True, {}
            return
        self.batches.append((gen, self.current))
        self.entries += sum(len(c) for c in self.current.values())
        self.current = {}
        while self.batches and (len(self.batches) > _MAX_BATCHES or self.entries > _MAX_ENTRIES):
            g, old = self.batches.popleft()
            self.entries -= sum(len(c) for c in old.values())
            self.floor, self.floor_partial = g, True

    def announced(self, gen: int) -> bool:
        """Whether generation ``gen``'s announcement arrived."""
        return not self.lost and self.last_gen is not None and not after(gen, self.last_gen)

    def close(self) -> None:
        with self.lock:  # not under a drain of another thread
            self.sock.close()
            self.lost = True  # a closed socket announces nothing: each capture reads in full


_monitors: dict[str, Monitor] = {}
_MAX_MONITORS = 256


def _open() -> tuple[socket.socket, int]:
    """The announcement socket, then the generation: every transaction after it is announced."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nfdump._NETLINK_NETFILTER)
    try:
        try:
            s.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        s.bind((0, 1 << (_NFNLGRP_NFTABLES - 1)))
        s.setblocking(False)
        gen = int(netnsio._nft_generation(), 16)
    except BaseException:
        s.close()
        raise
    return s, gen


def _sweep() -> None:
    """Close the monitors whose namespace is gone or was replaced (their socket keeps it alive)."""
    for path, m in list(_monitors.items()):
        try:
            st = os.stat(path)
            alive = (st.st_dev, st.st_ino) == m.ns
        except OSError:
            alive = False
        if not alive:
            _monitors.pop(path, None)
            m.close()


def monitor_for(exec: NodeExec, timeout: float) -> tuple[Monitor, bool] | None:
    """The node's monitor and whether it was opened just now; None when off, not a named namespace of
    this machine, or the socket cannot be opened there."""
    if not enabled() or type(exec) is not NetnsExec:
        return None
    ns = netnsio.netns_id(exec)
    if ns is None:
        return None
    path = os.path.join(netnsio._NETNS_DIR, exec.netns)
    with _lock:
        _sweep()
        m = _monitors.get(path)
        if m is not None:
            return m, False
    held: list[socket.socket | None] = [None]  # the socket, until the caller takes it
    gone = threading.Event()  # the caller gave up waiting: the opening thread closes what it opened

    def opening() -> tuple[socket.socket, int]:
        sock, gen = _open()
        with _lock:
            if gone.is_set():
                sock.close()
                raise OSError("abandoned")
            held[0] = sock
        return sock, gen

    try:
        got = netnsio.in_node(exec, opening, timeout)
    except BaseException:
        with _lock:
            gone.set()
            late = held[0]
        if late is not None:
            late.close()
        raise
    if got is None:
        return None
    with _lock:
        if path in _monitors:  # another thread opened one meanwhile
            got[0].close()
            return _monitors[path], False
        m = _monitors[path] = Monitor(path, ns, got[0], floor=got[1])
        while len(_monitors) > _MAX_MONITORS:  # the longest-open first (its node captures read in full)
            _monitors.pop(next(iter(_monitors))).close()
    return m, True


def changed_chains(
    m: Monitor, family: int, since: int, gen: int, *, exact: bool, wait: float = 0.5
) -> set[tuple[str, str]] | None:
    """The (table, chain) of ``family``'s iptables tables changed by the transactions after generation
    ``since`` (``exact``: the translation holds all of ``since`` — it was read once its announcement
    arrived; else transaction ``since`` counts too: a read right after the generation was bumped may
    not see all of it) up to ``gen`` (read from the node: its announcement is waited for); (table,
    ``""``) for a table announced. None when that cannot be told exactly: ``since`` is before the
    monitor knows, announcements were lost, one is not about a chain or its rules, or ``gen``'s
    announcement is not there within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        with m.lock:
            m.drain()
            if m.announced(gen):
                if after(m.floor, since) or after(since, gen):
                    return None
                if since == m.floor and not exact and m.floor_partial:
                    return None
                chains: set[tuple[str, str]] = set()
                for g, batch in m.batches:
                    if (after(g, since) or (g == since and not exact)) and not after(g, gen):
                        chains |= batch.get(family, set())
                return None if _WHOLE in chains else chains
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def read_chains(
    exec: NodeExec, family: int, chains: set[tuple[str, str]], gen: int, timeout: float
) -> bytes | None:
    """An ``nfdump`` output holding only ``chains`` (each existing one's table, chain and rules) read at
    generation ``gen``; None when the ruleset is no longer at ``gen`` or a table is gone."""

    def read() -> bytes | None:
        d = nfdump._Dumper(family)
        try:
            if _gen(d) != gen:
                return None
            msgs: list[bytes] = []
            name = nfdump._attr
            for t in sorted({t for t, _ in chains}):
                try:
                    msgs += d.request(nfdump._MSG["GETTABLE"], name(1, t.encode() + b"\0"), dump=False)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        return None
                    raise
            for t, c in sorted(chains):
                if not c:
                    continue  # the table itself (read above)
                sel = name(1, t.encode() + b"\0")
                try:
                    msgs += d.request(nfdump._MSG["GETCHAIN"], sel + name(3, c.encode() + b"\0"), dump=False)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        continue  # the chain is gone
                    raise
                msgs += d.request(nfdump._MSG["GETRULE"], sel + name(2, c.encode() + b"\0"))
            if _gen(d) != gen:
                return None
            return nfdump.HEADER + str(family).encode() + b"\n" + b"".join(msgs)
        finally:
            d.sock.close()

    return netnsio.in_node(exec, read, timeout)


def _gen(d: nfdump._Dumper) -> int:
    return int(netnsio._gen_id(d.generation()), 16)


def announced(m: Monitor, gen: int) -> bool:
    """Whether generation ``gen``'s announcement has arrived (what is waiting is read first)."""
    with m.lock:
        m.drain()
        return m.announced(gen)


def close_node(exec: NodeExec) -> None:
    """Close the node's monitor, if it has one."""
    if type(exec) is NetnsExec:
        close(exec.netns)


def close(which: str | Monitor) -> None:
    """Close the monitor of the namespace named ``which`` (before it is deleted: the socket keeps it
    alive), or that monitor."""
    with _lock:
        if isinstance(which, Monitor):
            m: Monitor | None = which
            if _monitors.get(which.path) is which:
                del _monitors[which.path]
        else:
            m = _monitors.pop(os.path.join(netnsio._NETNS_DIR, which), None)
    if m is not None:
        m.close()


@atexit.register
def close_all() -> None:
    with _lock:
        ms = list(_monitors.values())
        _monitors.clear()
    for m in ms:
        m.close()
