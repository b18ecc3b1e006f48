"""Capture one node's network state through a :class:`~pytest_k8sstate.node.exec.NodeExec`.

Parts (each captured independently; a failure lands in :attr:`NodeState.errors` and the rest is kept):

=========== ================================= ===========================================
part        command on the node               field
=========== ================================= ===========================================
iptables    ``iptables-save -c`` (see below)  ``iptables`` (IptablesRuleset)
ip6tables   ``ip6tables-save -c`` (see below) ``ip6tables`` (IptablesRuleset, IPv6)
nft         ``nft -j list ruleset``           ``nft`` (NftRuleset)
ipsets      ``ipset save``                    ``ipsets`` (list[IpSet])
ipvs        ``ipvsadm -Sn``                   ``ipvs`` (list[VirtualServer]); None when the node has no
                                              IPVS (no ``/proc/net/ip_vs``) — normal, not an error
links       ``ip -j -d addr show``            ``links`` (one command for links and addresses)
addrs       ``ip -j -d addr show``            ``addrs``
routes      ``ip -j route show table all``    ``routes`` (IPv4, every table incl. ``local``)
=========== ================================= ===========================================

Optional part ``conntrack`` (``conntrack -L -o extended``, IPv4 + IPv6 → ``conntrack``, a list of
``ConntrackEntry``): off by default, see :mod:`pytest_k8sstate.node.conntrack`.

``nft -j list ruleset`` holds every family (``ip``, ``ip6``, ``inet``, ``arp``, ``bridge``, ``netdev``).

**nf_tables fast path.** Where ``iptables -V`` says ``(nf_tables)``, ``iptables-save`` is slow (80–140 s
for 10,000 Services); instead :mod:`~pytest_k8sstate.node.nfdump` runs on the node (``python3 -c``; the
host's own interpreter for local and netns nodes) and reads the tables over netlink in about a second,
and :func:`~pytest_k8sstate.parse.iptnft.netlink_to_iptables_save` turns that into the exact
``iptables-save -c`` text, parsed as before. Whatever it cannot reproduce exactly (a rule with an
extension it does not know, no Python on the node) falls back to the real ``iptables-save -c``; the
reason is logged at debug level (logger ``pytest_k8sstate.node.capture``) and in
:attr:`NodeState.methods`. ``collect_node(..., nft_fast=False)`` or ``K8SSTATE_IPTABLES_FAST=0`` turn
the fast path off.

Latency: all commands of one node run in **one** ``sh`` invocation (:mod:`~pytest_k8sstate.node.commands`;
one by one where the node has no ``sh``). A large iptables family of a ``local`` node is read ahead of
them, in a thread of its own, and translated as soon as it is read (:mod:`~pytest_k8sstate.node.ahead`).
:func:`collect_nodes` captures several nodes concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self

from pytest_k8sstate.errors import CommandError, CommandTimeout, K8sStateError, ParseError
from pytest_k8sstate.node import ahead, compact, conntrack, iptfast, nftomit, reuse, rulecache
from pytest_k8sstate.node.commands import (
    COMMANDS,
    MISSING_RC,
    NO_IPVS_RC,
    Raw,
    run_batched,
    run_single,
    run_tables,
)
from pytest_k8sstate.node.exec import DockerExec, NodeExec
from pytest_k8sstate.parse.conntrack import ConntrackEntry
from pytest_k8sstate.parse.iproute import parse_ip_json
from pytest_k8sstate.parse.ipset import IpSet, parse_ipset_save
from pytest_k8sstate.parse.iptables import IptablesRuleset, parse_iptables_save
from pytest_k8sstate.parse.iptnft import Translated
from pytest_k8sstate.parse.ipvs import VirtualServer, parse_ipvsadm
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.parse.nftmemo import fresh_rules

__all__ = ["ALL_PARTS", "NodeState", "collect_node", "collect_nodes"]

_PART_CMD: dict[str, str] = {
    "iptables": "iptables",
    "ip6tables": "ip6tables",
    "nft": "nft",
    "ipsets": "ipsets",
    "ipvs": "ipvs",
    "links": "ipaddr",
    "addrs": "ipaddr",
    "routes": "routes",
}
ALL_PARTS: tuple[str, ...] = tuple(_PART_CMD)
_PART_CMD["conntrack"] = "conntrack"  # optional part, not in ALL_PARTS (see node/conntrack.py)


@dataclass
class NodeState:
    node: str
    iptables: IptablesRuleset | None = None
    nft: NftRuleset | None = None
    ip6tables: IptablesRuleset | None = None
    ipsets: list[IpSet] = field(default_factory=list)
    ipvs: list[VirtualServer] | None = None
    links: list[dict[str, Any]] = field(default_factory=list)
    addrs: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    conntrack: list[ConntrackEntry] | None = None  # optional part (node/conntrack.py); None: not captured
    errors: dict[str, str] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    """How a part was read when not by its plain command: ``{"iptables": "nf_tables netlink"}``, or
    ``"iptables-save (fast path: <why not>)"`` after a fallback."""

    def captured_nothing(self) -> bool:
        """True when every part that was tried failed (IPVS may be absent): the node state is empty."""
        tried = [p for p in ALL_PARTS if p not in ("ipvs", "ip6tables")]
        return bool(self.errors) and all(p in self.errors for p in tried)

    @property
    def local_ips(self) -> frozenset[str]:
        """The node's IPv4 addresses (for ``Packet(local_ips=...)``)."""
        return frozenset(str(a["local"]) for a in self.addrs if a.get("family") == "inet")

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "iptables": self.iptables.to_json() if self.iptables is not None else None,
            "ip6tables": self.ip6tables.to_json() if self.ip6tables is not None else None,
            "nft": self.nft.to_json() if self.nft is not None else None,
            "ipsets": [s.to_json() for s in self.ipsets],
            "ipvs": [v.to_json() for v in self.ipvs] if self.ipvs is not None else None,
            "links": self.links,
            "addrs": self.addrs,
            "routes": self.routes,
            **({"conntrack": [e.to_json() for e in self.conntrack]} if self.conntrack is not None else {}),
            "errors": dict(self.errors),
            "methods": dict(self.methods),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        try:
            return cls(
                node=str(d["node"]),
                iptables=IptablesRuleset.from_json(d["iptables"]) if d.get("iptables") is not None else None,
                nft=NftRuleset.from_json(d["nft"]) if d.get("nft") is not None else None,
                ip6tables=(
                    IptablesRuleset.from_json(d["ip6tables"]) if d.get("ip6tables") is not None else None
                ),
                ipsets=[IpSet.from_json(s) for s in d.get("ipsets") or []],
                ipvs=[VirtualServer.from_json(v) for v in d["ipvs"]] if d.get("ipvs") is not None else None,
                links=[dict(x) for x in d.get("links") or []],
                addrs=[dict(x) for x in d.get("addrs") or []],
                routes=[dict(x) for x in d.get("routes") or []],
                conntrack=(
                    [ConntrackEntry.from_json(e) for e in d["conntrack"]]
                    if d.get("conntrack") is not None
                    else None
                ),
                errors={str(k): str(v) for k, v in (d.get("errors") or {}).items()},
                methods={str(k): str(v) for k, v in (d.get("methods") or {}).items()},
            )
        except ParseError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ParseError(
                "node state JSON", None, "a NodeState object (to_json output)", repr(exc)
            ) from exc


def _clip(msg: str, limit: int = 2000) -> str:
    """One bounded line (a 10 MB chain name in an error must not make a 10 MB message)."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _settle_nft(
    exec: NodeExec, r: Raw, omit: nftomit.Omission, state: NodeState, timeout: float
) -> tuple[Raw, tuple[tuple[str, str], ...]]:
    """The nft part's output with ``omit``'s tables left out (one document) and those tables, or the
    whole ruleset and ``()`` when leaving them out would lose something (:mod:`.nftomit`)."""
    if r.rc < 0:  # timed out or the script stopped: reading it all again would only double the wait
        return r, ()
    if r.rc == 0 and omit.exact(state.methods, state.errors) and omit.unchanged(exec, timeout):
        try:
            return Raw(0, nftomit.merge_documents(r.stdout), r.stderr), omit.omitted
        except ValueError:
            pass
    return run_single(exec, "nft", timeout), ()


Translation = tuple[bytes, str | None, Translated | None, IptablesRuleset | None, dict[bytes, str] | None]
"""What :func:`_translate` gives: :func:`~pytest_k8sstate.node.iptfast.translate_or_fallback`'s four and the
memo it filled (None: reuse off)."""


def _translate(
    exec: NodeExec, part: str, out: bytes, plan: reuse.Plan, shared: dict[bytes, str] | None, timeout: float
) -> Translation:
    memo: dict[bytes, str] | None = {} if plan.key is not None else None  # reuse on
    prev = plan.translations.pop(part, None)
    src = f"{' '.join(COMMANDS[part][0])} (node {exec.node})"
    return (
        *iptfast.translate_or_fallback(
            exec, part, out, timeout, previous=prev, memo=memo, shared=shared, source=src
        ),
        memo,
    )


def _translate_read(
    exec: NodeExec, part: str, plan: reuse.Plan, shared: dict[bytes, str] | None, timeout: float, r: Raw
) -> Translation | None:
    """A family read ahead, translated as soon as it is read (None: the read failed, nothing to translate)."""
    return _translate(exec, part, r.stdout, plan, shared, timeout) if r.rc == 0 else None


_PARSERS: dict[str, Callable[[bytes, str], Any]] = {
    "iptables": lambda b, src: parse_iptables_save(b, source=src),
    "ip6tables": lambda b, src: parse_iptables_save(b, source=src),
    "nft": lambda b, src: parse_nft_json(b, source=src),
    "ipsets": lambda b, src: parse_ipset_save(b, source=src),
    "ipvs": lambda b, src: parse_ipvsadm(b, source=src),
    "links": lambda b, src: parse_ip_json(b, "link", source=src),
    "addrs": lambda b, src: parse_ip_json(b, "addr", source=src),
    "routes": lambda b, src: parse_ip_json(b, "route", source=src),
    "conntrack": lambda b, src: conntrack.parse_part(b, src),
}


def collect_node(
    exec: NodeExec,
    *,
    ipvs: bool = True,
    parts: Iterable[str] | None = None,
    timeout: float = 300.0,
    batch: bool = True,
    nft_fast: bool | None = None,
    shared: dict[bytes, str] | None = None,
) -> NodeState:
    """Capture ``exec``'s node; never raises for a failing part (see :attr:`NodeState.errors`).

    ``parts`` limits what is captured (default: all of :data:`ALL_PARTS`; ``ipvs=False`` drops IPVS).
    ``timeout`` bounds the whole capture of the node (batched) or each command (``batch=False`` or no
    ``sh`` on the node); ``nft -j list ruleset`` of 10,000 services takes tens of seconds.
    ``nft_fast`` (default: on unless ``$K8SSTATE_IPTABLES_FAST=0``) reads iptables-nft tables over
    netlink instead of running ``iptables-save`` (same result; see the module doc).
    ``shared``: one dict for the nodes captured together (their rule translations: most rules are the
    same on every node, so each is decoded once).
    """
    wanted = (
        list(parts) if parts is not None else [*ALL_PARTS, *(["conntrack"] if conntrack.enabled() else [])]
    )
    unknown = [p for p in wanted if p not in _PART_CMD]
    if unknown:
        raise K8sStateError(f"unknown node state part(s) {unknown}; choose from {', '.join(ALL_PARTS)}")
    if not ipvs and "ipvs" in wanted:
        wanted.remove("ipvs")
    node = exec.node
    state = NodeState(node)
    cmds = list(dict.fromkeys(_PART_CMD[p] for p in wanted))
    fast = iptfast.enabled() if nft_fast is None else nft_fast
    python = iptfast.node_python(exec) if fast else None
    # a local node: skip the commands whose parts did not change since its last capture (node/reuse.py)
    plan = reuse.plan(
        exec,
        cmds,
        _PART_CMD,
        timeout,
        variant=(fast, iptfast.MIN_CHAINS, nftomit.enabled()),
        dump_iptables=fast,
    )
    kept_nft = plan.reused.get("nft")
    if isinstance(kept_nft, NftRuleset) and not nftomit.covered(kept_nft.omitted, wanted):
        del plan.reused["nft"]  # its left-out tables are in an iptables part this capture does not take
    cmds = [c for c in cmds if not all(p in plan.reused for p in wanted if _PART_CMD[p] == c)]
    raw: dict[str, Raw] = {}
    plain = set()  # iptables families read in-process but small: plain iptables-save is as fast
    container = isinstance(exec, DockerExec)  # its own iptables-save: the version of its image
    for c in cmds:
        if c in plan.patched:  # the previous translation with the changed chains read again
            raw[c] = Raw(0, plan.patched[c], b"")
        elif c in plan.dumps:
            data, chains = plan.dumps[c]
            if chains >= iptfast.MIN_CHAINS and not container:
                raw[c] = Raw(0, data, b"")
            else:
                plain.add(c)
    # a large family for the dumper: read in a thread of its own from now on, translated there (node/ahead.py)
    early: dict[str, ahead.Ahead[Raw, Translation | None]] = {}
    if python is not None:
        for c in ahead.families(exec, [c for c in cmds if c not in raw and c not in plain], timeout):
            early[c] = ahead.start(
                exec,
                c,
                partial(run_single, exec, c, timeout, True),
                partial(_translate_read, exec, c, plan, shared, timeout),
                timeout,
                prefetch=shared is not None,
            )
    # those found small are not even given to the dumper on the node (it would start an interpreter to find
    # them small and run iptables-save), also when the other family is
    known_small = frozenset(c for c in plain if plan.dumps[c][1] < iptfast.MIN_CHAINS)
    # iptables-nft's own tables of a family read over netlink: not again in the nft part (node/nftomit.py;
    # not even asked when the plan's dumps already show every family small)
    small = all(plan.dumps.get(c, (b"", iptfast.MIN_CHAINS))[1] < iptfast.MIN_CHAINS for c in iptfast.FAMILY)
    omit = nftomit.plan(exec, wanted, timeout) if "nft" in cmds and fast and not small else None
    if plain and not any(c in iptfast.FAMILY and c not in raw and c not in plain for c in cmds):
        python, fast = None, False
    cmds = [c for c in cmds if c not in raw and c not in early]
    nft_sh = omit.shell() if omit is not None else None
    if python is not None and shared is not None and any(c in iptfast.FAMILY for c in cmds):
        rulecache.prefetch()  # a large family goes to the dumper: the translations on disk are read meanwhile
    ran = (run_batched(exec, cmds, timeout, python, nft_sh, known_small) if batch else None) if cmds else {}
    if ran is None:
        ran = {
            c: run_single(exec, c, timeout, fast and c not in known_small)
            for c in cmds
            if not (c == "nft" and omit)
        }
        if omit is not None and "nft" in cmds:
            ran["nft"] = run_tables(exec, omit, timeout)
    raw.update(ran)
    for c, a in early.items():
        try:
            raw[c] = a.read()
        except CommandTimeout as exc:
            raw[c] = Raw(-1, b"", str(exc).encode())
    # in ALL_PARTS order whatever the caller's: the nft part needs the iptables parts' methods
    for p in sorted(wanted, key=lambda q: ALL_PARTS.index(q) if q in ALL_PARTS else len(ALL_PARTS)):
        if p in plan.reused:
            setattr(state, p, plan.reused[p])
            if p in plan.methods:
                state.methods[p] = plan.methods[p]
            continue
        r = raw[_PART_CMD[p]]
        omitted: tuple[tuple[str, str], ...] = ()
        if p == "nft" and omit is not None:
            r, omitted = _settle_nft(exec, r, omit, state, timeout)
        argv, pkg = COMMANDS[_PART_CMD[p]]
        cmd = " ".join(argv)
        if p == "ipvs" and r.rc == NO_IPVS_RC:
            continue  # no IPVS in this kernel/namespace: ipvs stays None
        if r.rc == MISSING_RC:
            state.errors[p] = f"{argv[0]} not found on node {node}; install {pkg} in the node (image)"
            continue
        if r.rc != 0:
            tail = r.stderr.decode("utf-8", "replace").strip().splitlines()
            state.errors[p] = _clip(
                f"`{cmd}` exited {r.rc} on node {node}: {tail[-1] if tail else '(no stderr)'}; "
                f"check that {argv[0]} works there (root / CAP_NET_ADMIN, kernel modules)"
            )
            continue
        src = f"{cmd} (node {node})"
        out = r.stdout
        built: IptablesRuleset | None = None  # a translation's ruleset, without parsing its text
        try:
            if p in plan.patched:
                state.methods[p] = iptfast.NETLINK_METHOD
            elif p in iptfast.FAMILY:
                got = early[p].finished() if p in early else None
                out, method, tr, built, memo = got or _translate(exec, p, out, plan, shared, timeout)
                if method is not None:
                    state.methods[p] = method
                if memo and method == iptfast.NETLINK_METHOD:
                    plan.translations[p] = memo
                base = plan.full_base(tr) if tr is not None else None
                if base is not None and plan.bases is not None:
                    plan.bases[p] = base
        except CommandError as exc:
            state.errors[p] = _clip(f"`{cmd}` (the fast path's fallback) failed on node {node}: {exc}")
            continue
        try:
            value: Any
            if built is not None:
                value = built
            elif p == "nft" and plan.key is not None:  # reuse on: unchanged rules from the last capture
                value = parse_nft_json(out, source=src, previous=plan.previous.get("nft"), index=True)
            else:
                value = _PARSERS[p](out, src)
        except K8sStateError as exc:
            state.errors[p] = _clip(f"could not parse `{cmd}` output from node {node}: {exc}")
            continue
        except (RecursionError, MemoryError) as exc:
            state.errors[p] = (
                f"could not parse `{cmd}` output from node {node}: {type(exc).__name__} "
                "(the output is nested too deeply or too large to parse)"
            )
            continue
        except Exception as exc:
            state.errors[p] = _clip(
                f"could not parse `{cmd}` output from node {node}: {type(exc).__name__}: {exc} "
                "(a pytest-k8sstate parser bug: please report it with the output)"
            )
            continue
        if p == "nft":  # large rulesets: equal sub-trees one object (the new rules only)
            compact.share_equal_expressions(value, only=fresh_rules(value))
            value.omitted = omitted
        if p == "conntrack":
            value, note = value
            if note:
                state.errors[p] = note
        setattr(state, p, value)
    if plan.key is not None:
        done = {**plan.reused, **{p: getattr(state, p) for p in wanted if p not in state.errors}}
        reuse.remember(plan, _PART_CMD, done, state.methods)
    return state


def collect_nodes(execs: Iterable[NodeExec], **kwargs: Any) -> dict[str, NodeState]:
    """Capture several nodes concurrently (one thread per node); keys are node names, in input order."""
    ex_list = list(execs)
    if not ex_list:
        return {}
    kwargs.setdefault("shared", rulecache.translations())
    with ThreadPoolExecutor(max_workers=min(16, len(ex_list))) as pool:
        states = list(pool.map(lambda e: collect_node(e, **kwargs), ex_list))
    rulecache.persist()
    return {s.node: s for s in states}
