"""One iptables-nft rule's nf_tables expressions → its ``iptables-save`` text after ``-A CHAIN``.

The rule-level half of :mod:`pytest_k8sstate.parse.iptnft` (which reads the netlink dump, keys and
memoises rules, and writes the tables): :func:`translate_rule` decodes a rule's expressions (each
distinct one once per dump; ``xt`` matches/targets rendered by :mod:`~pytest_k8sstate.parse.iptnft_ext`)
and says where its counters are; :func:`translate_ops` rebuilds the iptables options from them —
addresses with masks, interfaces, the protocol, tcp/udp ports and flags, marks, the extensions — in the
order ``iptables-save`` prints them. Raises :class:`~pytest_k8sstate.parse.nfnl.Untranslatable` for
anything it would not print exactly.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from pytest_k8sstate.parse.iptnft_ext import MATCHES, TARGETS, ip6_text, mark_text, ports_text, tcp_text
from pytest_k8sstate.parse.nfnl import Op, Untranslatable, attrs, decode_expr, fast_counter, nl_str, u64

__all__ = ["translate_ops", "translate_rule", "where"]

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}  # same in /etc/protocols and iptables' table
_AF_INET, _AF_INET6 = 2, 10
_U16 = struct.Struct("=H")


class _Rule:
    """The iptables command state being rebuilt from one rule's expressions."""

    __slots__ = ("addrs", "ifaces", "matches", "proto", "target", "tcpudp")

    def __init__(self) -> None:
        self.addrs: dict[str, str] = {}  # "s"/"d" → " ! -s 1.2.3.0/24"
        self.ifaces: dict[str, str] = {}  # "i"/"o" → " -i eth0"
        self.proto: tuple[int, bool] | None = None
        self.matches: list[list[str]] = []  # [name, text]
        self.tcpudp: dict[str, Any] | None = None
        self.target = ""


def _addr_text(fam: int, field: str, data: bytes, mask: bytes, inv: bool) -> str:
    if len(data) == 4 and fam == _AF_INET and mask == b"\xff\xff\xff\xff":  # the common -d IP/32
        return (" !" if inv else "") + f" -{field} {socket.inet_ntoa(data)}/32"
    size = 4 if fam == _AF_INET else 16
    full = data + b"\0" * (size - len(data))
    m = mask + b"\0" * (size - len(mask))
    mi = int.from_bytes(m, "big")
    bits = bin(mi).count("1")
    contiguous = mi == ((1 << size * 8) - 1) ^ ((1 << (size * 8 - bits)) - 1)
    if fam == _AF_INET:
        a = socket.inet_ntoa(full)
        suffix = f"/{bits}" if contiguous else "/" + socket.inet_ntoa(m)
    else:
        a = ip6_text(full, f"-{field}")
        if not contiguous:
            raise Untranslatable(f"-{field} with a non-prefix IPv6 mask")
        suffix = f"/{bits}"
    return (" !" if inv else "") + f" -{field} {a}{suffix}"


def translate_ops(ops: list[Op], fam: int) -> str:
    """The rule's text after ``-A CHAIN`` from its expressions without counters (the caller reads those)."""
    r = _Rule()
    regs: dict[int, tuple[Any, Any]] = {}
    pending_gte: tuple[int, int, str] | None = None
    addr_base = 12 if fam == _AF_INET else 8
    addr_len = 4 if fam == _AF_INET else 16
    for op in ops:
        kind = op[0]
        if kind == "verdict":
            if r.target:
                raise Untranslatable("two verdicts")
            r.target = op[1]
            continue
        if kind == "xtmatch":
            r.matches.append([op[1], op[2]])
            continue
        if kind == "load":
            regs[op[1]] = (op[2], None)
            continue
        if kind == "bitwise":
            src = regs.get(op[1])
            if src is None or src[1] is not None:
                raise Untranslatable("a bitwise on an unknown register")
            regs[op[2]] = (src[0], op[3])
            continue
        if kind not in ("cmp", "range"):
            raise Untranslatable(f"operation {kind}")
        loaded = regs.get(op[1])
        if loaded is None:
            raise Untranslatable(f"a {kind} on an unloaded register")
        what, mask = loaded
        assert isinstance(what, tuple)
        if kind == "range":
            _, _, rop, lo, hi = op
            if rop not in (0, 1) or mask is not None:
                raise Untranslatable("a range other than eq/neq")
            _port(r, what, lo, hi, rop == 1)
            continue
        _, _, cop, data = op
        if cop not in (0, 1):
            if cop == 5 and pending_gte is None:  # a port range as gte + lte
                pending_gte = (op[1], int.from_bytes(data, "big"), "")
                continue
            if cop == 3 and pending_gte is not None and pending_gte[0] == op[1]:
                _port(r, what, pending_gte[1].to_bytes(2, "big"), data, False)
                pending_gte = None
                continue
            raise Untranslatable(f"cmp operator {cop}")
        inv = cop == 1
        if what[0] == "meta":
            key = what[1]
            if key == "l4proto":
                if mask is not None or len(data) != 1 or r.proto is not None:
                    raise Untranslatable("an unusual -p")
                r.proto = (data[0], inv)
            elif key in ("iifname", "oifname"):
                if mask is not None or len(data) > 16:
                    raise Untranslatable("an unusual interface match")
                name = data[:-1].decode() if data.endswith(b"\0") else data.decode() + "+"
                if "\0" in name or not name.strip("+"):
                    raise Untranslatable("an interface name with NUL")
                f = key[0]
                r.ifaces[f] = (" !" if inv else "") + f" -{f} {name}"
            elif key == "mark":
                if len(data) != 4:
                    raise Untranslatable("an unusual mark match")
                m = struct.unpack("=I", mask)[0] if mask is not None else 0xFFFFFFFF
                r.matches.append(["mark", mark_text(struct.unpack("=I", data)[0], m, inv)])
            continue
        _, base, off, ln = what
        if base == 1 and addr_base <= off < addr_base + 2 * addr_len:
            field = "s" if off < addr_base + addr_len else "d"
            start = addr_base if field == "s" else addr_base + addr_len
            if off != start or ln > addr_len or len(data) != ln or field in r.addrs:
                raise Untranslatable("an unusual address match")
            r.addrs[field] = _addr_text(fam, field, data, mask if mask is not None else b"\xff" * ln, inv)
            continue
        if base == 2 and off in (0, 2) and ln == 2 and mask is None:
            _port(r, what, data, data, inv)
            continue
        if base == 2 and off == 13 and ln == 1 and mask is not None:
            t = _tcpudp(r, "tcp")
            if "flags" in t:
                raise Untranslatable("two tcp flag matches")
            t["flags"] = (mask[0], data[0], inv)
            continue
        raise Untranslatable(f"a payload match at base {base} offset {off}")
    if pending_gte is not None:
        raise Untranslatable("a dangling >= comparison")
    return _render(r, fam)


def _tcpudp(r: _Rule, want: str | None = None) -> dict[str, Any]:
    if r.tcpudp is None:
        if r.proto is None or r.proto[1] or r.proto[0] not in (6, 17):
            raise Untranslatable("a port match without -p tcp/udp")
        name = "tcp" if r.proto[0] == 6 else "udp"
        r.tcpudp = {"name": name, "slot": len(r.matches)}
        r.matches.append([name, ""])
    if want is not None and r.tcpudp["name"] != want:
        raise Untranslatable(f"a {want} match in a non-{want} rule")
    return r.tcpudp


def _port(r: _Rule, what: tuple[Any, ...], lo: bytes, hi: bytes, inv: bool) -> None:
    if what[0] != "payload" or what[1] != 2 or what[2] not in (0, 2) or what[3] != 2:
        raise Untranslatable("a range on something other than a port")
    t = _tcpudp(r)
    key = "sport" if what[2] == 0 else "dport"
    if key in t:
        raise Untranslatable(f"two --{key} matches")
    t[key] = (int.from_bytes(lo, "big"), int.from_bytes(hi, "big"), inv)


def _render(r: _Rule, fam: int) -> str:
    if r.tcpudp is not None:
        t = r.tcpudp
        sp = t.get("sport", (0, 0xFFFF, False))
        dp = t.get("dport", (0, 0xFFFF, False))
        assert isinstance(sp, tuple)
        assert isinstance(dp, tuple)
        inv = (1 if sp[2] else 0) | (2 if dp[2] else 0)
        if t["name"] == "tcp":
            fl = t.get("flags", (0, 0, False))
            assert isinstance(fl, tuple)
            text = tcp_text(sp[:2], dp[:2], 0, fl[0], fl[1], inv | (4 if fl[2] else 0))
        else:
            text = ports_text(sp[0], sp[1], bool(inv & 1), "--sport") + ports_text(
                dp[0], dp[1], bool(inv & 2), "--dport"
            )
        slot = t["slot"]
        assert isinstance(slot, int)
        r.matches[slot][1] = text
    s = r.addrs.get("s", "") + r.addrs.get("d", "") + r.ifaces.get("i", "") + r.ifaces.get("o", "")
    if r.proto is not None:
        num, inv = r.proto
        if num not in _PROTO_NAMES:
            raise Untranslatable(f"-p {num} (its name depends on the node's /etc/protocols)")
        s += (" !" if inv else "") + f" -p {_PROTO_NAMES[num]}"
    for name, text in r.matches:
        s += f" -m {name}{text}"
    return s + r.target


def translate_rule(
    data: bytes,
    epos: int,
    eend: int,
    fam: int,
    cache: dict[bytes, Op],
    mpos: int,
    length: int,
) -> tuple[str, list[int], tuple[int, tuple[int, int]] | None]:
    """One rule's text after ``-A CHAIN`` from its expressions ``data[epos:eend]`` (``cache``: decoded
    expressions by their bytes, shared by the dump's rules); where its counters in iptables-nft's layout
    are (the values of those are at fixed offsets); and the position and values of the last expression
    that decoded as a counter in another layout, if any."""
    ops: list[Op] = []
    fast: list[int] = []
    odd: tuple[int, tuple[int, int]] | None = None
    u16 = _U16.unpack_from
    get = cache.get
    e = epos
    while e + 4 <= eend:
        n = u16(data, e)[0]
        if n < 4 or e + n > eend:
            raise Untranslatable(f"{where(data, mpos, length)}: a malformed expression")
        at = e
        e += (n + 3) & ~3
        if n == 44 and fast_counter(data, at, eend):
            fast.append(at)
            continue
        raw = data[at + 4 : at + n]
        op = get(raw)
        if op is None:
            try:
                op = decode_expr(raw, fam)
                if op[0] == "xt":
                    op = _extension(op, fam)
            except Untranslatable as exc:
                raise Untranslatable(f"{where(data, mpos, length)}: {exc}") from None
            except (struct.error, KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
                raise Untranslatable(
                    f"{where(data, mpos, length)}: an undecodable expression ({exc!r})"
                ) from None
            cache[raw] = op
        if op[0] == "counter":
            odd = (at, (op[1], op[2]))
            continue
        ops.append(op)
    try:
        return translate_ops(ops, fam), fast, odd
    except Untranslatable as exc:
        raise Untranslatable(f"{where(data, mpos, length)}: {exc}") from None
    except (struct.error, KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise Untranslatable(f"{where(data, mpos, length)}: an undecodable rule ({exc!r})") from None


def _extension(op: Op, fam: int) -> Op:
    """An ``("xt", match|target, name, revision, info)`` operation → its rendered form."""
    _, kind, name, rev, info = op
    if kind == "match":
        fn = MATCHES.get(name)
        if fn is None:
            raise Untranslatable(f"match extension {name!r} (revision {rev})")
        return ("xtmatch", *fn(info, fam, rev))
    tfn = TARGETS.get(name)
    if tfn is None:
        raise Untranslatable(f"target extension {name!r} (revision {rev})")
    return ("verdict", f" -j {name}" + tfn(info, fam, rev))


def where(data: bytes, pos: int, length: int) -> str:
    """ "table T, chain C, rule handle H" of the rule message at ``pos`` (for error messages)."""
    a = attrs(data, pos + 20, pos + length)
    return (
        f"table {nl_str(a.get(1, b''))}, chain {nl_str(a.get(2, b''))}, rule handle {u64(a.get(3, bytes(8)))}"
    )
