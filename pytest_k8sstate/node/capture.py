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

Latency: all commands of one node run in **one** ``sh`` invocation (one ``ip netns exec`` / ``docker
exec`` instead of six); the output is split on per-call random markers. Where the node has no
``sh`` the commands run one by one. A node container (``DockerExec``) runs that ``sh`` text in its
long-lived shell (:mod:`~pytest_k8sstate.node.session`): no ``docker exec`` per snapshot.
:func:`collect_nodes` captures several nodes concurrently.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import CommandError, CommandNotFound, CommandTimeout, K8sStateError, ParseError
from pytest_k8sstate.node import compact, conntrack, iptfast, nftomit, reuse, rulecache
from pytest_k8sstate.node.exec import DockerExec, NodeExec
from pytest_k8sstate.parse.conntrack import ConntrackEntry
from pytest_k8sstate.parse.iproute import parse_ip_json
from pytest_k8sstate.parse.ipset import IpSet, parse_ipset_save
from pytest_k8sstate.parse.iptables import IptablesRuleset, parse_iptables_save
from pytest_k8sstate.parse.ipvs import VirtualServer, parse_ipvsadm
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.parse.nftmemo import fresh_rules

__all__ = ["ALL_PARTS", "NodeState", "collect_node", "collect_nodes"]

# command id → (argv, package that provides the binary)
_COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "iptables": (("iptables-save", "-c"), "iptables"),
    "ip6tables": (("ip6tables-save", "-c"), "iptables"),
    "nft": (("nft", "-j", "list", "ruleset"), "nftables"),
    "ipsets": (("ipset", "save"), "ipset"),
    "ipvs": (("ipvsadm", "-Sn"), "ipvsadm"),
    "ipaddr": (("ip", "-j", "-d", "addr", "show"), "iproute2"),  # links (with linkinfo) and addresses
    "routes": (("ip", "-j", "route", "show", "table", "all"), "iproute2"),
    "conntrack": (("conntrack", "-L", "-o", "extended"), "conntrack"),  # optional: node/conntrack.py
}
# part → command id
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
_NO_IPVS_RC = 199  # our script's code for "this node has no IPVS": not an error
_MISSING_RC = 127  # sh: command not found


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


@dataclass
class _Raw:
    rc: int
    stdout: bytes
    stderr: bytes


def _script(
    parts: list[str],
    marker: str,
    python: str | None = None,
    nft: str | None = None,
    plain: frozenset[str] = frozenset(),
) -> str:
    lines = []
    for p in parts:
        argv = " ".join(shlex.quote(a) for a in _COMMANDS[p][0])
        if p == "nft" and nft is not None:
            argv = nft
        if python is not None and p in iptfast.FAMILY and p not in plain:
            argv = f"( {iptfast.shell_command(p, python)} )"
        if p == "conntrack":
            argv = f"( {conntrack.SCRIPT} )"
        if p == "ipvs":
            # ipvsadm would try to modprobe ip_vs: don't even start it when the kernel has no IPVS
            argv = f"if [ -e /proc/net/ip_vs ]; then {argv}; else exit {_NO_IPVS_RC}; fi"
            argv = f"( {argv} )"
        lines.append(
            f"echo '{marker} {p}'; echo '{marker} {p}' >&2; {argv}; rc=$?; "
            f"printf '\\n{marker} end %s\\n' $rc; printf '\\n{marker} end %s\\n' $rc >&2"
        )
    return "\n".join(lines) + "\n"


def _split(data: bytes, marker: str, parts: list[str]) -> dict[str, tuple[bytes, int | None]]:
    out: dict[str, tuple[bytes, int | None]] = {}
    m = marker.encode()
    for p in parts:
        begin = m + b" " + p.encode() + b"\n"
        i = data.find(begin)
        if i < 0:
            continue
        start = i + len(begin)
        j = data.find(b"\n" + m + b" end ", start)
        if j < 0:
            out[p] = (data[start:], None)
            continue
        k = data.find(b"\n", j + 1 + len(m) + 5)
        rc_text = data[j + 1 + len(m) + 5 : k if k >= 0 else None].strip()
        out[p] = (data[start:j], int(rc_text) if rc_text.isdigit() else None)
    return out


def _run_batched(
    exec: NodeExec,
    parts: list[str],
    timeout: float,
    python: str | None = None,
    nft: str | None = None,
    plain: frozenset[str] = frozenset(),
) -> dict[str, _Raw] | None:
    """All parts in one ``sh``; None when the node has no usable ``sh``. ``python``: the node's interpreter
    for the iptables families' fast path, but for those in ``plain`` (their plain ``iptables-save``)."""
    marker = "@@k8ss-" + secrets.token_hex(8)
    script = _script(parts, marker, python, nft, plain)
    run_script = getattr(exec, "run_script", None)  # a node's long-lived shell (node/session.py)
    try:
        res = run_script(script, timeout=timeout) if run_script is not None else None
        if res is None:
            res = exec.run(["sh", "-c", script], timeout=timeout, check=False)
    except CommandTimeout as exc:  # running each command again would only double the wait
        return {p: _Raw(-1, b"", str(exc).encode()) for p in parts}
    except CommandError:
        return None  # no usable ``sh`` (or no way to run it): one command per part
    outs, errs = _split(res.stdout, marker, parts), _split(res.stderr, marker, parts)
    if not outs and res.returncode != 0:
        return None  # sh itself missing or broken
    raw: dict[str, _Raw] = {}
    for p in parts:
        if p not in outs:
            raw[p] = _Raw(-1, b"", b"the capture script stopped before this part: " + res.stderr[-300:])
            continue
        out, rc = outs[p]
        err = errs.get(p, (b"", None))[0]
        raw[p] = _Raw(rc if rc is not None else -1, out, err)
    return raw


def _run_tables(exec: NodeExec, omit: nftomit.Omission, timeout: float) -> _Raw:
    """Without ``sh``: one ``nft -j list table`` per kept table, their documents one per line."""
    out = []
    for argv in omit.argvs():
        r = _run_single(exec, "nft", timeout, argv=argv)
        if r.rc != 0:
            return r
        out.append(r.stdout.rstrip() + b"\n")
    return _Raw(0, b"".join(out), b"")


def _settle_nft(
    exec: NodeExec, r: _Raw, omit: nftomit.Omission, state: NodeState, timeout: float
) -> tuple[_Raw, tuple[tuple[str, str], ...]]:
    """The nft part's output with ``omit``'s tables left out (one document) and those tables, or the
    whole ruleset and ``()`` when leaving them out would lose something (:mod:`.nftomit`)."""
    if r.rc < 0:  # timed out or the script stopped: reading it all again would only double the wait
        return r, ()
    if r.rc == 0 and omit.exact(state.methods, state.errors) and omit.unchanged(exec, timeout):
        try:
            return _Raw(0, nftomit.merge_documents(r.stdout), r.stderr), omit.omitted
        except ValueError:
            pass
    return _run_single(exec, "nft", timeout), ()


def _run_single(
    exec: NodeExec, part: str, timeout: float, fast: bool = False, argv: list[str] | None = None
) -> _Raw:
    if argv is None:
        argv = ["sh", "-c", conntrack.SCRIPT] if part == "conntrack" else list(_COMMANDS[part][0])
    if fast and part in iptfast.FAMILY:
        out = iptfast.single_command(exec, part, timeout)
        if out is not None:
            return _Raw(0, out, b"")
    try:
        if part == "ipvs":
            probe = exec.run(["test", "-e", "/proc/net/ip_vs"], timeout=timeout, check=False)
            if probe.returncode != 0:
                return _Raw(_NO_IPVS_RC, b"", b"")
        res = exec.run(argv, timeout=timeout, check=False)
    except CommandNotFound as exc:
        return _Raw(_MISSING_RC, b"", str(exc).encode())
    except CommandError as exc:
        return _Raw(-1, b"", str(exc).encode())
    if res.returncode != 0 and b'exec of "' in res.stderr and b"No such file" in res.stderr:
        return _Raw(_MISSING_RC, b"", res.stderr)  # `ip netns exec` could not find the binary
    return _Raw(res.returncode, res.stdout, res.stderr)


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
    raw: dict[str, _Raw] = {}
    plain = set()  # iptables families read in-process but small: plain iptables-save is as fast
    container = isinstance(exec, DockerExec)  # its own iptables-save: the version of its image
    for c in cmds:
        if c in plan.patched:  # the previous translation with the changed chains read again
            raw[c] = _Raw(0, plan.patched[c], b"")
        elif c in plan.dumps:
            data, chains = plan.dumps[c]
            if chains >= iptfast.MIN_CHAINS and not container:
                raw[c] = _Raw(0, data, b"")
            else:
                plain.add(c)
    # those found small are not even given to the dumper on the node (it would start an interpreter to find
    # them small and run iptables-save), also when the other family is
    known_small = frozenset(c for c in plain if plan.dumps[c][1] < iptfast.MIN_CHAINS)
    # iptables-nft's own tables of a family read over netlink: not again in the nft part (node/nftomit.py;
    # not even asked when the plan's dumps already show every family small)
    small = all(plan.dumps.get(c, (b"", iptfast.MIN_CHAINS))[1] < iptfast.MIN_CHAINS for c in iptfast.FAMILY)
    omit = nftomit.plan(exec, wanted, timeout) if "nft" in cmds and fast and not small else None
    if plain and not any(c in iptfast.FAMILY and c not in raw and c not in plain for c in cmds):
        python, fast = None, False
    cmds = [c for c in cmds if c not in raw]
    nft_sh = omit.shell() if omit is not None else None
    if python is not None and shared is not None and any(c in iptfast.FAMILY for c in cmds):
        rulecache.prefetch()  # a large family goes to the dumper: the translations on disk are read meanwhile
    ran = (_run_batched(exec, cmds, timeout, python, nft_sh, known_small) if batch else None) if cmds else {}
    if ran is None:
        ran = {
            c: _run_single(exec, c, timeout, fast and c not in known_small)
            for c in cmds
            if not (c == "nft" and omit)
        }
        if omit is not None and "nft" in cmds:
            ran["nft"] = _run_tables(exec, omit, timeout)
    raw.update(ran)
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
        argv, pkg = _COMMANDS[_PART_CMD[p]]
        cmd = " ".join(argv)
        if p == "ipvs" and r.rc == _NO_IPVS_RC:
            continue  # no IPVS in this kernel/namespace: ipvs stays None
        if r.rc == _MISSING_RC:
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
                memo: dict[bytes, str] | None = {} if plan.key is not None else None  # reuse on
                prev = plan.translations.pop(p, None)
                out, method, tr, built = iptfast.translate_or_fallback(
                    exec, p, out, timeout, previous=prev, memo=memo, shared=shared, source=src
                )
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
