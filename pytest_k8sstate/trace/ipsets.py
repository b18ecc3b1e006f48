"""Membership of a packet in captured ipsets: what ``-m set --match-set NAME src|dst[,…]`` decides.

:class:`SetIndex` wraps a node's captured sets (:func:`pytest_k8sstate.parse.ipset.parse_ipset_save`)
and compiles each set on first use into a lookup table, so a set of 10,000 Service entries costs one
dictionary probe per rule. Supported set types (IPv4 and IPv6, ``family inet``/``inet6``):

* ``hash:ip``, ``hash:net``, ``hash:ip,port``, ``hash:net,port``, ``hash:ip,port,ip``,
  ``hash:ip,port,net``, ``hash:net,port,net``, ``hash:net,net`` — each address dimension is matched
  by prefix: the most specific entry that contains the packet's addresses decides, and a ``nomatch``
  entry makes it a non-match (or a match with ``--return-nomatch``), as the kernel does; ``hash:ip``'s
  ``netmask N`` masks the packet's address first. Port dimensions are ``PROTO:PORT`` (``tcp`` when the
  protocol is omitted);
* ``bitmap:port`` (the packet's port) and ``bitmap:ip`` (addresses, ranges and CIDRs);
* ``list:set``: a match in any member set, in order.

Direction flags: the n-th flag (``src``/``dst``) says which of the packet's addresses/ports the n-th
dimension of the set is compared with; extra flags are ignored and fewer flags than dimensions never
match (the kernel's rule). A set whose family is not the packet's never matches. ``!`` inverts.

Anything else — a set type with MAC, interface or mark dimensions, counter conditions
(``--packets-gt``…), a set that was not captured, a malformed member — raises
:class:`CannotEvaluate` naming the set and its type; the tracer turns it into a TraceError that names
the rule and its line (never a silent guess).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from pytest_k8sstate.parse.ipset import IpSet
from pytest_k8sstate.parse.iptables import Match

__all__ = ["CannotEvaluate", "PacketView", "SetIndex", "match_set_module"]

# Dimension kinds of hash:/bitmap: types; "ip" and "net" are both matched by prefix.
_HASH_DIMS = frozenset({"ip", "net", "port"})
_PORT_PROTOS = frozenset({"tcp", "udp", "sctp", "udplite"})
_PROTO_NUM = {"6": "tcp", "17": "udp", "132": "sctp", "136": "udplite"}
# options of "-m set" that do not change whether a packet matches
_NEUTRAL_OPTS = frozenset({"--update-counters", "--update-subcounters"})
MAX_RANGE = 65536
"""A member written as a range (``80-90``, ``10.0.0.1-10.0.0.9``) is expanded up to this many items."""
MAX_ENTRIES = 1_000_000
"""At most this many lookup entries per set (ipset's own default maxelem is 65536)."""


_LAST: tuple[tuple[tuple[int, int], ...], list[IpSet], SetIndex] | None = None


class CannotEvaluate(Exception):
    """A match the tracer cannot decide (message names the set/module); the tracer names the rule."""


@dataclass(frozen=True, slots=True)
class PacketView:
    """The packet fields a set lookup reads (addresses/ports as they are at that point of the path)."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: str

    def addr(self, flag: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.src if flag == "src" else self.dst)

    def port(self, flag: str) -> tuple[str, int]:
        return (self.proto, self.sport if flag == "src" else self.dport)

    @property
    def family(self) -> int:
        return 6 if ":" in self.dst else 4


_AddrKey = tuple[int, int]  # (prefix length, masked address as int)
_Key = tuple[object, ...]


class _Compiled:
    """One set as a lookup table: ``dims`` kinds, per address dimension the prefix lengths present
    (most specific first), and ``entries`` key → nomatch."""

    def __init__(self, s: IpSet) -> None:
        self.name = s.name
        self.type = s.type
        method, _, dims_text = s.type.partition(":")
        self.kind = method
        self.dims = tuple(dims_text.split(","))
        fam = s.options.get("family", "inet")
        if fam not in ("inet", "inet6"):
            raise self.error(f"unknown family {fam!r}")
        self.family = 6 if fam == "inet6" else 4
        self.entries: dict[_Key, bool] = {}
        self.prefixes: list[list[int]] = [[] for _ in self.dims]
        self.members: list[str] = []
        if method == "list" and self.dims == ("set",):
            self.members = [m.split()[0] for m in s.members]
            self.family = 0
            return
        if method == "hash" and set(self.dims) <= _HASH_DIMS:
            pass
        elif method == "bitmap" and self.dims in (("port",), ("ip",)):
            if self.dims == ("port",):
                self.family = 0  # bitmap:port matches packets of either family
        else:
            raise self.error(
                "this set type is not supported (supported: hash:ip/net/port combinations, "
                "bitmap:ip, bitmap:port, list:set)"
            )
        if "bitmask" in s.options or "markmask" in s.options:
            raise self.error("the bitmask/markmask option is not supported")
        self.netmask: int | None = None
        if "netmask" in s.options:
            nm = s.options["netmask"]
            if not (nm.isascii() and nm.isdigit() and int(nm) <= (128 if self.family == 6 else 32)):
                raise self.error(f"cannot read netmask {nm!r}")
            self.netmask = int(nm)
        self._check_size(s.members)
        seen: list[set[int]] = [set() for _ in self.dims]
        for member in s.members:
            text, _, flag = member.partition(" ")
            nomatch = flag == "nomatch"
            parts = text.split(",")
            if len(parts) != len(self.dims):
                raise self.error(f"member {member!r} does not have {len(self.dims)} parts")
            choices: list[list[object]] = []
            for i, (kind, part) in enumerate(zip(self.dims, parts, strict=True)):
                if kind == "port":
                    choices.append(list(self._ports(part)))
                else:
                    keys = self._addrs(part, member)
                    for k in keys:
                        seen[i].add(k[0])
                    choices.append(list(keys))
            n = 1
            for c in choices:
                n *= len(c)
            if len(self.entries) + n > MAX_ENTRIES:
                raise self.error(f"more than {MAX_ENTRIES} entries once ranges are expanded (at {member!r})")
            for key in itertools.product(*choices):
                self.entries[key] = nomatch
        self.prefixes = [sorted(p, reverse=True) for p in seen]

    def _check_size(self, members: list[str]) -> None:
        """Port ranges are expanded into entries: refuse before building more than MAX_ENTRIES."""
        total = 0
        for member in members:
            n = 1
            for part, kind in zip(member.partition(" ")[0].split(","), self.dims, strict=False):
                if kind == "port":
                    lo, dash, hi = part.rpartition(":")[2].partition("-")
                    if dash and lo.isascii() and lo.isdigit() and hi.isascii() and hi.isdigit():
                        n *= max(1, int(hi[:6]) - int(lo[:6]) + 1)
            total += n
            if total > MAX_ENTRIES:
                raise self.error(f"more than {MAX_ENTRIES} entries once ranges are expanded (at {member!r})")

    def error(self, why: str) -> CannotEvaluate:
        return CannotEvaluate(f"cannot evaluate -m set: set {self.name} (type {self.type}): {why}")

    def _ports(self, part: str) -> Iterable[tuple[str, int]]:
        proto, sep, port = part.rpartition(":")
        proto = proto.lower() if sep else ("tcp" if self.kind == "hash" else "")
        proto = _PROTO_NUM.get(proto, proto)
        lo, dash, hi = port.partition("-")
        if not (lo.isascii() and lo.isdigit() and (not dash or (hi.isascii() and hi.isdigit()))):
            if proto.startswith("icmp"):
                return [(proto, -1)]  # an ICMP type/code entry: never a TCP/UDP/SCTP packet
            raise self.error(f"cannot read port {part!r}")
        a, b = int(lo), int(hi) if dash else int(lo)
        if not a <= b <= 65535:
            raise self.error(f"cannot read port {part!r}")
        return [(proto, p) for p in range(a, b + 1)]

    def _addrs(self, part: str, member: str) -> list[_AddrKey]:
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
        if "/" not in part and "-" not in part and (self.netmask is None or self.dims[0] != "ip"):
            try:  # one address: the common case, without building a network object
                a1 = ipaddress.ip_address(part)
            except ValueError as exc:
                raise self.error(f"cannot read address {part!r} of member {member!r}") from exc
            if a1.version != self.family:
                raise self.error(f"member {member!r} is not an IPv{self.family} address")
            return [(a1.max_prefixlen, int(a1))]
        try:
            if "-" in part:
                first, _, last = part.partition("-")
                a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
                nets = list(ipaddress.summarize_address_range(a, b))
            else:
                nets = [ipaddress.ip_network(part, strict=False)]
        except (ValueError, TypeError) as exc:
            raise self.error(f"cannot read address {part!r} of member {member!r}") from exc
        if len(nets) > MAX_RANGE:
            raise self.error(f"member {member!r} spans more than {MAX_RANGE} networks")
        out: list[_AddrKey] = []
        for n in nets:
            if n.version != self.family:
                raise self.error(f"member {member!r} is not an IPv{self.family} address")
            plen = n.prefixlen
            if self.netmask is not None and self.dims[0] == "ip":
                plen = min(plen, self.netmask)
                n = n.supernet(new_prefix=plen)
            out.append((plen, int(n.network_address)))
        return out

    def test(self, pkt: PacketView, flags: list[str], index: SetIndex, return_nomatch: bool) -> bool:
        if self.kind == "list":
            for name in self.members:
                if index.compiled(name).test(pkt, flags, index, return_nomatch):
                    return True
            return False
        if len(flags) < len(self.dims):
            return False  # the kernel: fewer direction flags than dimensions never match
        if self.family and self.family != pkt.family:
            return False
        if self.kind == "bitmap" and self.dims == ("port",):
            proto, port = pkt.port(flags[0])
            return proto in _PORT_PROTOS and (("", port),) in self.entries
        cands: list[list[object]] = []
        bits = 128 if pkt.family == 6 else 32
        for i, kind in enumerate(self.dims):
            if kind == "port":
                cands.append([pkt.port(flags[i])])
                continue
            a = int(pkt.addr(flags[i]))
            cands.append([(p, a >> (bits - p) << (bits - p)) for p in self.prefixes[i]])
        for key in itertools.product(*cands):  # most specific prefixes first, as the kernel looks up
            nomatch = self.entries.get(key)
            if nomatch is not None:
                return return_nomatch or not nomatch
        return False


class SetIndex:
    """A node's captured ipsets by name, each compiled on first use (and kept)."""

    def __init__(self, ipsets: Iterable[IpSet]) -> None:
        self.sets = {s.name: s for s in ipsets}
        self._compiled: dict[str, _Compiled] = {}
        self.memo: dict[str, object] = {}  # derived data other tracers keep with the sets

    @classmethod
    def of(cls, ipsets: Iterable[IpSet] | SetIndex | None) -> SetIndex | None:
        """``ipsets`` as an index. The index of the last list of sets is reused while the list holds
        the same set objects with the same member counts (a node traced packet after packet compiles
        its 10,000-member sets once); pass a SetIndex to control reuse yourself."""
        global _LAST
        if ipsets is None or isinstance(ipsets, SetIndex):
            return ipsets
        sets = list(ipsets)
        key = tuple((id(x), len(x.members)) for x in sets)
        last = _LAST
        if last is not None and last[0] == key:
            return last[2]
        idx = cls(sets)
        _LAST = (key, sets, idx)  # the list keeps the objects alive: their ids stay theirs
        return idx

    def compiled(self, name: str) -> _Compiled:
        c = self._compiled.get(name)
        if c is None:
            s = self.sets.get(name)
            if s is None:
                names = ", ".join(sorted(self.sets)[:8]) + (", …" if len(self.sets) > 8 else "")
                raise CannotEvaluate(
                    f"cannot evaluate -m set: set {name} (type unknown) is not among the captured ipsets "
                    f"({len(self.sets)} sets{': ' + names if names else ''})"
                )
            c = self._compiled[name] = _Compiled(s)
        return c

    def contains(self, name: str, flags: str, pkt: PacketView, *, return_nomatch: bool = False) -> bool:
        """Whether ``pkt`` is in set ``name`` as ``--match-set NAME flags`` sees it."""
        fl = flags.split(",")
        if not fl or any(f not in ("src", "dst") for f in fl) or len(fl) > 6:
            raise CannotEvaluate(
                f"cannot evaluate -m set: direction flags {flags!r} of set {name} "
                "(expected src|dst[,src|dst…], at most 6)"
            )
        return self.compiled(name).test(pkt, fl, self, return_nomatch)


def match_set_module(m: Match, sets: SetIndex | None, pkt: PacketView) -> bool:
    """One ``-m set`` match: ``[!] --match-set NAME FLAGS`` (legacy ``--set``), ``--return-nomatch``;
    counter updates are ignored (they change no verdict), counter conditions cannot be evaluated."""
    spec: tuple[str, str, bool] | None = None
    return_nomatch = False
    for o in m.opts:
        if o.name in ("--match-set", "--set"):
            if spec is not None or len(o.values) != 2:
                raise CannotEvaluate("cannot evaluate -m set: expected one --match-set NAME FLAGS")
            spec = (o.values[0], o.values[1], o.negated)
        elif o.name == "--return-nomatch":
            return_nomatch = True
        elif o.name in _NEUTRAL_OPTS:
            continue
        else:
            name = spec[0] if spec else "?"
            raise CannotEvaluate(
                f"cannot evaluate -m set option {o.name} (set {name}): only --match-set, "
                "--return-nomatch and counter updates are supported"
            )
    if spec is None:
        raise CannotEvaluate("cannot evaluate -m set without --match-set")
    name, flags, negated = spec
    if sets is None:
        raise CannotEvaluate(
            f"cannot evaluate -m set: set {name} (type unknown): no ipsets were given "
            "(pass ipsets= the node's captured `ipset save` sets)"
        )
    return sets.contains(name, flags, pkt, return_nomatch=return_nomatch) != negated
