"""Reuse the previous capture of a node's part when its fingerprint did not change (``local`` nodes,
and kind/minikube node containers of a local engine: :mod:`~pytest_k8sstate.node.containerns`).

:func:`pytest_k8sstate.node.capture.collect_node` asks :func:`plan` which of a node's commands must run:
for a node that is a network namespace of this machine it reads the parts' fingerprints in-process
(:func:`pytest_k8sstate.node.netnsio.fingerprints`, about a millisecond) and compares them with the
fingerprints recorded by the node's previous capture in this process (:func:`remember`). A command
whose fingerprint is unchanged is not run: its parts are the previous capture's parsed values
(shared objects — treat a snapshot's rulesets as read-only, as its decoded etcd values already are).

What a fingerprint covers (see :mod:`~pytest_k8sstate.node.netnsio`): ``iptables``/``ip6tables``
(where iptables is the nf_tables variant): a digest of the tables read over netlink, counters
included — exact; ``nft``: the nf_tables ruleset generation + every rule with its counters + the
named objects (never reused when a set is updated from the packet path — ``dynamic`` or ``timeout``
sets, whose elements change without a new generation); raw-dump digests for ``ipaddr`` (links +
addresses), ``routes`` and ``ipsets``. A ruleset of more than :data:`LARGE_CHAINS` chains is
fingerprinted by the generation alone (a digest of 2,000 Services' rules takes seconds): a reused
large ruleset keeps the rule counters of the capture that read it. ``K8SSTATE_NODE_REUSE=generation``
does that for every ruleset (traffic through a node changes its counters, hence its exact digest, at
almost every capture). Other commands (``ipvs``, parts
registered later) always run. ``K8SSTATE_NODE_REUSE=0`` turns reuse off (every command runs every time).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from pytest_k8sstate.errors import CommandError
from pytest_k8sstate.node import iptfast, netnsio, nfmon, rulecache
from pytest_k8sstate.node.exec import DockerExec, NodeExec, run_command
from pytest_k8sstate.parse.iptables import IptablesRuleset
from pytest_k8sstate.parse.iptnft import Translated, Untranslatable, patch
from pytest_k8sstate.parse.nft import NftRuleset

__all__ = ["ENV", "Plan", "enabled", "iptables_is_nft", "plan", "remember"]

ENV = "K8SSTATE_NODE_REUSE"
_MAX_NODES = 256  # nodes remembered per process (oldest forgotten first)


def enabled() -> bool:
    """False when ``$K8SSTATE_NODE_REUSE`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def by_generation() -> bool:
    """``$K8SSTATE_NODE_REUSE=generation``: every ruleset fingerprinted by the nf_tables generation
    alone, as large ones always are (faster; reused rulesets keep the counters of their last read)."""
    return os.environ.get(ENV, "").strip().lower() == "generation"


@cache
def iptables_is_nft(part: str) -> bool:
    """Whether this machine's ``iptables``/``ip6tables`` is the nf_tables variant (asked once)."""
    try:
        res = run_command([part, "-V"], timeout=10, check=False)
    except CommandError:
        return False
    return res.returncode == 0 and b"nf_tables" in res.stdout


@dataclass
class _Memo:
    fingerprints: dict[str, str]
    values: dict[str, Any]  # part → parsed value
    methods: dict[str, str]
    translations: dict[str, dict[bytes, str]] = field(default_factory=dict)  # part → iptnft memo
    bases: dict[str, Base] = field(default_factory=dict)  # part → Plan.bases


class Base(NamedTuple):
    """A large iptables family's translation, to patch with the chains announced after it (nfmon)."""

    translated: Translated
    since: int
    """The generation read before it was (``exact``: it holds all of that transaction)."""
    exact: bool
    monitor: int
    """The serial of the node's monitor that was open when it was read."""


@dataclass
class Plan:
    """What :func:`plan` decided for one node."""

    key: tuple[Any, ...] | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    reused: dict[str, Any] = field(default_factory=dict)
    """part → the previous capture's value (its command is not run)."""
    methods: dict[str, str] = field(default_factory=dict)
    gen: str | None = None
    """The nf_tables generation read before anything else."""
    previous: dict[str, Any] = field(default_factory=dict)
    """part → the node's previous capture's value, reused or not (incremental parsing)."""
    dumps: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    """``iptables``/``ip6tables`` → (their tables as nfdump prints them, number of chains): read for
    the fingerprint, translated by the capture when the part is not reused."""
    translations: dict[str, dict[bytes, str]] = field(default_factory=dict)
    """``iptables``/``ip6tables`` → the last capture's rule translations (parse/iptnft.py), to start from;
    the capture puts this capture's in their place."""
    patched: dict[str, bytes] = field(default_factory=dict)
    """``iptables``/``ip6tables`` → its ``iptables-save -c`` text: the previous translation with the
    chains the node announced as changed read again (:mod:`~pytest_k8sstate.node.nfmon`)."""
    bases: dict[str, Base] | None = None
    """``iptables``/``ip6tables`` → this capture's translation (the capture adds those it reads in full:
    :meth:`full_base`); None: the node has no monitor (nothing to patch next time)."""
    monitor: int = 0
    announced: bool = False
    """:attr:`gen`'s transaction had been announced before anything was read."""

    def full_base(self, tr: Translated) -> Base | None:
        """The record of a family read in full by this capture (after :attr:`gen` was read)."""
        if self.bases is None or self.gen is None:
            return None
        return Base(tr, int(self.gen, 16), self.announced, self.monitor)


_FAMILY = iptfast.FAMILY  # part → address family
_lock = threading.Lock()
_memos: OrderedDict[tuple[Any, ...], _Memo] = OrderedDict()


_node_nft: dict[tuple[Any, str], bool] = {}


def _is_nft(exec: NodeExec, ns: tuple[int, int], cmd: str) -> bool:
    """Whether the node's ``iptables``/``ip6tables`` is the nf_tables variant: this machine's for a
    ``local`` node; a node container's own (asked once per namespace) — legacy iptables rules are not
    in nf_tables, so the fingerprints would not see them change."""
    if not isinstance(exec, DockerExec):
        return iptables_is_nft(cmd)
    key = (ns, cmd)
    with _lock:
        known = _node_nft.get(key)
    if known is None:
        try:
            res = exec.run_script(f"{cmd} -V", timeout=10) or exec.run([cmd, "-V"], timeout=10, check=False)
        except CommandError:
            return False
        known = res.returncode == 0 and b"nf_tables" in res.stdout
        with _lock:
            _node_nft[key] = known
    return known


def _fingerprint(cmd: str, fps: dict[str, str], memo: _Memo | None, is_nft: bool) -> str | None:
    """The fingerprint that stands for ``cmd``'s output, or None (always run it)."""
    if cmd in ("iptables", "ip6tables"):
        if not is_nft:
            return None  # legacy iptables: not in nf_tables
        return fps.get(f"gen-{cmd}") or fps.get(f"dump-{cmd}")
    if cmd == "nft":
        prev = memo.values.get("nft") if memo is not None else None
        if isinstance(prev, NftRuleset) and _has_dynamic_sets(prev):
            return None
        return fps.get("gen-nft") or fps.get("nft")
    if cmd == "ipaddr":
        links, addrs = fps.get("links"), fps.get("addrs")
        return None if links is None or addrs is None else links + addrs
    if cmd in ("routes", "ipsets"):
        return fps.get(cmd)
    return None


LARGE_CHAINS = 2000
"""Above this many chains, a ruleset is fingerprinted by the nf_tables generation alone (reading every
rule of 2,000 kube-proxy Services for a digest takes seconds): a reused large ruleset keeps the rule
counters of the capture that read it."""


def _chains(value: Any) -> int:
    if isinstance(value, IptablesRuleset):
        return sum(len(t.chains) for t in value.tables.values())
    if isinstance(value, NftRuleset):  # tables left out are large ones (node/nftomit.py)
        return sum(len(t.chains) for t in value.tables.values()) + (LARGE_CHAINS + 1 if value.omitted else 0)
    return 0


def _has_dynamic_sets(rs: NftRuleset) -> bool:
    for t in rs.tables.values():
        for s in (*t.sets.values(), *t.maps.values()):
            if "dynamic" in s.flags or "timeout" in s.flags or "timeout" in s.extra:
                return True
    return False


def plan(
    exec: NodeExec,
    cmds: list[str],
    part_cmd: dict[str, str],
    timeout: float,
    variant: object = None,
    *,
    dump_iptables: bool = True,
) -> Plan:
    """Which of ``cmds`` can be skipped (their parts reused); an empty plan when reuse is off or the
    node is not a namespace of this machine. ``variant``: what else the parsed values depend on (the
    fast path's setting: it shows in ``NodeState.methods``) — captures of another variant are not reused."""
    if not enabled():
        return Plan()
    ns = netnsio.netns_id(exec)
    if ns is None:
        return Plan()
    key = (ns, exec.node, variant, by_generation())  # the two modes keep separate records
    with _lock:
        memo = _memos.get(key)
    limit = min(timeout, 60.0)
    # a node that may hold a large iptables family (not known yet, or large last time) is followed
    # (node/nfmon.py) by a monitor opened before the generation is read: every later transaction, and
    # the one in flight then, is announced to it
    mon: nfmon.Monitor | None = None
    opened = False
    if any(c in _FAMILY for c in cmds):
        if memo is None or any(_chains(memo.values.get(c)) > LARGE_CHAINS for c in _FAMILY):
            try:
                got_mon = nfmon.monitor_for(exec, limit)
            except (CommandError, OSError):
                got_mon = None
            if got_mon is not None:
                mon, opened = got_mon
        else:
            nfmon.close_node(exec)  # small now: its monitor (if any) would fill up unread
    got = netnsio.fingerprints(exec, timeout=limit, nft_exact=False)
    if not got or not got[0]:
        if opened and mon is not None:
            nfmon.close(mon)
        return Plan()
    fps = got[0]
    gen = fps.get("nft-gen")
    # whether the transaction of the generation just read has been announced (then it is applied in
    # full, and a full read now holds all of it: Base.exact)
    announced = mon is not None and gen is not None and nfmon.announced(mon, int(gen, 16))
    # large rulesets (memo: more than LARGE_CHAINS chains) are fingerprinted by the generation alone;
    # the others by digests of their rules and counters (exact), read now
    gen_only = key[-1]
    large: set[str] = {
        c
        for c in ("iptables", "ip6tables", "nft")
        if memo is not None
        and c in memo.fingerprints
        and (gen_only or _chains(memo.values.get(c)) > LARGE_CHAINS)
    }
    nftish = {c: _is_nft(exec, ns, c) for c in _FAMILY if c in cmds}
    # a node's first capture here: a family large by its tables' chain counts (read in a millisecond) is
    # not dumped in-process for a digest (three nodes' dumps under one GIL: about 0.4 s more for the
    # first snapshot of 2,000 Services) but read on the node and fingerprinted by the generation, as later
    first_large: set[str] = set()
    if memo is None and any(nftish.values()):
        sizes = netnsio.iptables_sizes(exec, limit) or {}
        first_large = {c for c, on in nftish.items() if on and sizes.get(_FAMILY[c], 0) > LARGE_CHAINS}
        large |= first_large
        if first_large and "nft" in cmds:
            large.add("nft")  # their tables are in the nft ruleset too
    # a large ruleset whose generation changed is read on the node (nfdump in its own interpreter): the
    # nodes of a snapshot are captured concurrently, and three in-process dumps would share one GIL
    fams = {c: f for c, f in _FAMILY.items() if c in cmds and c not in large and dump_iptables and nftish[c]}
    nft_exact = "nft" in cmds and "nft" not in large
    dumps: dict[str, tuple[bytes, int]] = {}
    if fams or nft_exact:
        more = netnsio.fingerprints(exec, timeout=limit, families=fams, nft_exact=nft_exact, cheap=False)
        if more is not None:
            fps.update(more[0])
            dumps = more[1]
    if gen is not None:
        for c in large:
            fps[f"gen-{c}"] = f"gen:{gen}"
    out = Plan(
        key=key,
        dumps=dumps,
        gen=gen,
        previous=dict(memo.values) if memo is not None else {},
        translations=dict(memo.translations) if memo is not None else {},
    )
    # a first capture that finds every family small keeps no monitor; the others follow the changes
    if (
        mon is not None
        and opened
        and memo is None
        and not first_large
        and not any(d[1] > LARGE_CHAINS for d in dumps.values())
    ):
        nfmon.close(mon)  # small: nothing worth following (it is not opened again while it stays small)
        mon = None
    if mon is not None:
        out.bases, out.monitor, out.announced = {}, mon.serial, announced
        try:
            _follow(exec, mon, out, memo, {c for c in large if c in _FAMILY and nftish.get(c)}, limit)
        except (CommandError, OSError, Untranslatable):
            out.patched.clear()  # what _follow had not finished is read in full
            out.reused, out.bases = {}, {}
    for cmd in cmds:
        fp = _fingerprint(cmd, fps, memo, nftish.get(cmd, False))
        if fp is None:
            continue
        out.fingerprints[cmd] = fp
        if memo is None or memo.fingerprints.get(cmd) != fp:
            continue
        parts = [p for p, c in part_cmd.items() if c == cmd]
        if all(p in memo.values for p in parts):
            for p in parts:
                out.reused[p] = memo.values[p]
                if p in memo.methods:
                    out.methods[p] = memo.methods[p]
    if out.bases is not None and memo is not None:
        for part in _FAMILY:
            if part in out.reused and part in memo.bases:
                out.bases.setdefault(part, memo.bases[part])
    return out


def _follow(
    exec: NodeExec, mon: nfmon.Monitor, out: Plan, memo: _Memo | None, large: set[str], limit: float
) -> None:
    """For each large iptables family whose generation moved: reuse it when the node announced no change
    to its chains, or patch the previous translation with the chains it announced (``out.patched``);
    otherwise leave it to be read in full."""
    if memo is None or out.gen is None or out.bases is None:
        return
    gen = int(out.gen, 16)
    for c in sorted(large):
        base = memo.bases.get(c)
        if base is None or base.monitor != mon.serial or c not in memo.values:
            continue  # nothing to start from that this monitor followed
        if memo.fingerprints.get(c) == f"gen:{out.gen}":
            continue  # unchanged (reused as usual)
        fam = _FAMILY[c]
        chains = nfmon.changed_chains(mon, fam, base.since, gen, exact=base.exact)
        if chains is None:
            continue
        if not chains:  # the generation moved for other tables or families only
            out.reused[c] = memo.values[c]
            if c in memo.methods:
                out.methods[c] = memo.methods[c]
            out.bases[c] = Base(base.translated, gen, True, mon.serial)
            continue
        if 4 * len(chains) > sum(len(t) for t in base.translated.tables.values()):
            continue  # most of it changed (a full resync): a full read is cheaper
        data = nfmon.read_chains(exec, fam, chains, gen, limit)
        if data is None:
            continue
        tr = dict(memo.translations.get(c, {}))
        shared = rulecache.translations()  # the rules of blocks taken whole are not in ``tr``
        rulecache.ready(shared)
        try:
            now = patch(base.translated, data, chains, previous=tr, memo=tr, shared=shared)
            text = now.text()
        except Untranslatable:
            continue
        out.patched[c] = text.encode("utf-8", "surrogateescape")
        out.translations[c] = tr if len(tr) <= 4 * now.rule_count() + 64 else {}
        out.bases[c] = Base(now, gen, True, mon.serial)  # read once gen's announcement had arrived


def remember(p: Plan, part_cmd: dict[str, str], values: dict[str, Any], methods: dict[str, str]) -> None:
    """Record a capture's parsed parts under the fingerprints taken *before* it read them (a change
    in between only makes the next capture read again)."""
    if p.key is None:
        return

    def parts(c: str) -> list[str]:
        return [q for q, pc in part_cmd.items() if pc == c]

    fps = {c: fp for c, fp in p.fingerprints.items() if all(q in values for q in parts(c))}
    if p.gen is not None:  # large rulesets: recorded by their generation (see LARGE_CHAINS)
        for c in ("iptables", "ip6tables", "nft"):
            if c in fps and (by_generation() or _chains(values.get(c)) > LARGE_CHAINS):
                fps[c] = f"gen:{p.gen}"
    keep = {q: v for q, v in values.items() if part_cmd.get(q) in fps}
    with _lock:
        memo = _memos.pop(p.key, None)
        if memo is not None:  # commands not run this time (fewer parts asked for) keep their record
            for c, fp in memo.fingerprints.items():
                if c not in p.fingerprints and not any(q in values for q in parts(c)):
                    fps[c] = fp
                    keep.update({q: memo.values[q] for q in parts(c) if q in memo.values})
        tr = {q: t for q, t in p.translations.items() if q in keep}
        bases = {q: b for q, b in (p.bases or {}).items() if q in keep}
        _memos[p.key] = _Memo(fps, keep, {q: m for q, m in methods.items() if q in keep}, tr, bases)
        while len(_memos) > _MAX_NODES:
            _memos.popitem(last=False)
