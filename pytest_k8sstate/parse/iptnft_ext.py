"""The ``xt`` compat extensions of iptables-nft: an extension's info blob → what iptables-save prints.

Each function takes ``(info, family, revision)`` and returns what libxtables' ``save`` of that
extension prints (matches also their ``-m`` name). A layout or option it does not know raises
:class:`Untranslatable` — the capture then runs the real ``iptables-save`` (see
:mod:`pytest_k8sstate.parse.iptnft`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Callable

from pytest_k8sstate.parse.nfnl import Untranslatable, nl_str

__all__ = ["MATCHES", "TARGETS", "ip6_text", "mark_text", "ports_text", "tcp_text"]

_AF_INET, _AF_INET6 = 2, 10


# --- xt extensions: (info bytes, family) → the option text iptables-save prints -----------------


_PLAIN = re.compile(r"[_0-9a-zA-Z-]+")
_ESCAPE = re.compile(r"([\"\\'])")


def _save_string(v: str) -> str:
    """A string option as xtables_save_string prints it (quoted and escaped unless plain)."""
    if _PLAIN.fullmatch(v):
        return " " + v
    return ' "' + _ESCAPE.sub(r"\\\1", v) + '"'


def _cstr(b: bytes) -> str:
    if b"\0" not in b:
        raise Untranslatable("an unterminated string in an xt info")
    return nl_str(b)


def _m_comment(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    return "comment", " --comment" + _save_string(_cstr(info[:256]))


def _m_nfacct(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    # revisions 0 and 1 both start with the accounting object's name (32 bytes); libxt_nfacct prints a
    # space of its own before xtables_save_string's
    return "nfacct", " --nfacct-name " + _save_string(_cstr(info[:32]))


def _m_statistic(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    mode, flags = struct.unpack_from("=HH", info, 0)
    inv = " !" if flags & 1 else ""
    if mode == 0:
        (p,) = struct.unpack_from("=I", info, 4)
        return "statistic", f" --mode random{inv} --probability {p / 0x80000000:.11f}"
    if mode == 1:
        every, packet = struct.unpack_from("=II", info, 4)
        s = f" --mode nth{inv} --every {every + 1}"
        return "statistic", s + (f" --packet {packet}" if packet else "")
    raise Untranslatable(f"statistic mode {mode}")


_RTN: tuple[str, ...] = (
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
)
_RTN += ("PROHIBIT", "THROW", "NAT", "XRESOLVE")


def _types(mask: int) -> str:
    return ",".join(n for i, n in enumerate(_RTN) if mask & (1 << i))


def _m_addrtype(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    if rev != 1:
        raise Untranslatable(f"addrtype revision {rev}")
    src, dst, flags = struct.unpack_from("=HHI", info, 0)
    s = ""
    if src:
        s += (" !" if flags & 1 else "") + " --src-type " + _types(src)
    if dst:
        s += (" !" if flags & 2 else "") + " --dst-type " + _types(dst)
    if flags & 4:
        s += " --limit-iface-in"
    if flags & 8:
        s += " --limit-iface-out"
    return "addrtype", s


def _m_multiport(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    if rev != 1:
        raise Untranslatable(f"multiport revision {rev}")
    flags, count = info[0], info[1]
    ports = struct.unpack_from("=15H", info, 2)
    pflags, invert = info[32:47], info[47]
    if flags not in (0, 1, 2) or count > 15:
        raise Untranslatable("multiport flags/count")
    out, i = [], 0
    while i < count:
        item = str(ports[i])
        if pflags[i]:
            i += 1
            item += f":{ports[i]}"
        out.append(item)
        i += 1
    opt = (" --sports ", " --dports ", " --ports ")[flags]
    return "multiport", (" !" if invert else "") + opt + ",".join(out)


def _m_recent(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    if rev not in (0, 1):
        raise Untranslatable(f"recent revision {rev}")
    seconds, hits, check_set, invert = struct.unpack_from("=IIBB", info, 0)
    name = _cstr(info[10:210])
    side = info[210]
    s = " !" if invert else ""
    for bit, opt in ((2, " --set"), (1, " --rcheck"), (4, " --update"), (8, " --remove")):
        if check_set & bit:
            s += opt
    if seconds:
        s += f" --seconds {seconds}"
    if check_set & 32:
        s += " --reap"
    if hits:
        s += f" --hitcount {hits}"
    if check_set & 16:
        s += " --rttl"
    s += f" --name {name}"
    if rev == 1:
        mask = info[212:228]
        s += " --mask " + (socket.inet_ntoa(mask[:4]) if fam == _AF_INET else ip6_text(mask, "recent --mask"))
    if side == 0:
        s += " --rsource"
    elif side == 1:
        s += " --rdest"
    return "recent", s


_CT_STATES: tuple[tuple[int, str], ...] = (
    (1, "INVALID"),
    (8, "NEW"),
    (4, "RELATED"),
    (2, "ESTABLISHED"),
    (256, "UNTRACKED"),  # XT_CONNTRACK_STATE_UNTRACKED: 1 << (IP_CT_NUMBER + 3), IP_CT_NUMBER = 5
)
_CT_STATES += ((64, "SNAT"), (128, "DNAT"))  # 1 << (IP_CT_NUMBER + 1), 1 << (IP_CT_NUMBER + 2)


def _m_conntrack(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    if rev not in (2, 3):
        raise Untranslatable(f"conntrack revision {rev}")
    match_flags, invert_flags, state = struct.unpack_from("=HHH", info, 146)
    alias = bool(match_flags & (1 << 13))
    if match_flags & ~(1 | (1 << 13)):
        raise Untranslatable("conntrack options other than --ctstate/--state")
    states = ",".join(n for bit, n in _CT_STATES if state & bit)
    inv = " !" if invert_flags & 1 else ""
    if alias:
        return "state", f"{inv} --state {states}"
    return "conntrack", f"{inv} --ctstate {states}"


def ports_text(lo: int, hi: int, inv: bool, opt: str) -> str:
    if lo == 0 and hi == 0xFFFF:
        return ""
    return (" !" if inv else "") + (f" {opt} {lo}:{hi}" if lo != hi else f" {opt} {lo}")


def _tcpf(flags: int) -> str:
    names = [n for bit, n in ((1, "FIN"), (2, "SYN"), (4, "RST"), (8, "PSH"), (16, "ACK"), (32, "URG"))]
    out = [n for i, n in enumerate(names) if flags & (1 << i)]
    return ",".join(out) if out else "NONE"


def tcp_text(sp: tuple[int, int], dp: tuple[int, int], opt: int, fmask: int, fcmp: int, inv: int) -> str:
    s = ports_text(sp[0], sp[1], bool(inv & 1), "--sport") + ports_text(
        dp[0], dp[1], bool(inv & 2), "--dport"
    )
    if opt or inv & 8:
        s += (" !" if inv & 8 else "") + f" --tcp-option {opt}"
    if fmask or inv & 4:
        s += (" !" if inv & 4 else "") + f" --tcp-flags {_tcpf(fmask)} {_tcpf(fcmp)}"
    return s


def _m_tcp(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    s0, s1, d0, d1 = struct.unpack_from("=4H", info, 0)
    opt, fmask, fcmp, inv = info[8], info[9], info[10], info[11]
    return "tcp", tcp_text((s0, s1), (d0, d1), opt, fmask, fcmp, inv)


def _m_udp(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    s0, s1, d0, d1 = struct.unpack_from("=4H", info, 0)
    inv = info[8]
    return "udp", ports_text(s0, s1, bool(inv & 1), "--sport") + ports_text(d0, d1, bool(inv & 2), "--dport")


def _m_mark(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    if rev != 1:
        raise Untranslatable(f"mark match revision {rev}")
    mark, mask, inv = struct.unpack_from("=IIB", info, 0)
    return "mark", mark_text(mark, mask, bool(inv))


def mark_text(mark: int, mask: int, inv: bool) -> str:
    v = f" 0x{mark:x}/0x{mask:x}" if mask != 0xFFFFFFFF else f" 0x{mark:x}"
    return (" !" if inv else "") + " --mark" + v


def _m_icmp(info: bytes, fam: int, rev: int) -> tuple[str, str]:
    if fam != _AF_INET:
        raise Untranslatable("an icmp match outside IPv4")
    typ, c0, c1, inv = info[0], info[1], info[2], info[3]
    s = " !" if inv & 1 else ""
    if typ == 0xFF:
        return "icmp", s + " --icmp-type any"
    return "icmp", s + f" --icmp-type {typ}" + (f"/{c0}" if c0 != 0 or c1 != 0xFF else "")


MATCHES: dict[str, Callable[[bytes, int, int], tuple[str, str]]] = {
    "comment": _m_comment,
    "statistic": _m_statistic,
    "addrtype": _m_addrtype,
    "multiport": _m_multiport,
    "recent": _m_recent,
    "conntrack": _m_conntrack,
    "tcp": _m_tcp,
    "udp": _m_udp,
    "mark": _m_mark,
    "icmp": _m_icmp,
    "nfacct": _m_nfacct,
}

# NAT range flags
_MAP_IPS, _PROTO_SPEC, _RANDOM, _PERSISTENT, _RANDOM_FULLY, _OFFSET = 1, 2, 4, 8, 16, 32


def ip6_text(b: bytes, what: str) -> str:
    a = ipaddress.IPv6Address(b[:16])
    if a.ipv4_mapped is not None or (int(a) >> 32 == 0 and int(a) > 1):
        raise Untranslatable(f"{what}: IPv6 address {a} with an embedded IPv4 form")
    return str(a)


def _nat_range(info: bytes, fam: int, rev: int, name: str) -> tuple[int, str]:
    """(flags, printed range) of an nf_nat_range(2) (rev ≥ 1) or an IPv4 multi-range (rev 0)."""
    if rev == 0 and fam == _AF_INET:
        size, flags = struct.unpack_from("=II", info, 0)
        if size != 1:
            raise Untranslatable(f"{name} with {size} ranges")
        amin, amax, pmin, pmax = info[8:12], info[12:16], info[16:18], info[18:20]
        base = b"\0\0"
    elif rev in (1, 2) or (rev == 0 and name == "MASQUERADE"):  # IPv6 MASQUERADE 0: nf_nat_range
        (flags,) = struct.unpack_from("=I", info, 0)
        amin, amax, pmin, pmax = info[4:20], info[20:36], info[36:38], info[38:40]
        base = info[40:42] if rev == 2 else b"\0\0"
    else:
        raise Untranslatable(f"{name} revision {rev}")
    s = ""
    v6 = fam == _AF_INET6
    if flags & _MAP_IPS:
        lo = socket.inet_ntoa(amin[:4]) if not v6 else ip6_text(amin, name)
        hi = socket.inet_ntoa(amax[:4]) if not v6 else ip6_text(amax, name)
        if v6 and flags & _PROTO_SPEC:
            s += f"[{lo}]" if lo == hi else f"[{lo}-{hi}]"
        else:
            s += lo if lo == hi else f"{lo}-{hi}"
    if flags & _PROTO_SPEC:
        p0, p1 = struct.unpack(">H", pmin)[0], struct.unpack(">H", pmax)[0]
        s += f":{p0}" + (f"-{p1}" if p1 != p0 else "")
        if flags & _OFFSET:
            s += f"/{struct.unpack('>H', base)[0]}"
    return flags, s


def _t_nat(kind: str) -> Callable[[bytes, int, int], str]:
    def save(info: bytes, fam: int, rev: int) -> str:
        flags, rng = _nat_range(info, fam, rev, kind)
        if flags & ~(_MAP_IPS | _PROTO_SPEC | _RANDOM | _PERSISTENT | _RANDOM_FULLY | _OFFSET):
            raise Untranslatable(f"{kind} flags {flags:#x}")
        if fam == _AF_INET6 and flags & _MAP_IPS and not flags & _PROTO_SPEC and "-" in rng:
            raise Untranslatable(f"{kind}: an IPv6 address range")
        s = ""
        if flags & (_MAP_IPS | _PROTO_SPEC):
            s = f" --to-{'destination' if kind == 'DNAT' else 'source'} {rng}"
        if flags & _RANDOM:
            s += " --random"
        if kind == "SNAT" and flags & _RANDOM_FULLY:
            s += " --random-fully"
        elif flags & _RANDOM_FULLY:
            raise Untranslatable(f"{kind} --random-fully")
        if flags & _PERSISTENT:
            s += " --persistent"
        return s

    return save


def _t_masquerade(info: bytes, fam: int, rev: int) -> str:
    flags, _ = _nat_range(info, fam, rev, "MASQUERADE")
    if flags & ~(_PROTO_SPEC | _RANDOM | _RANDOM_FULLY):
        raise Untranslatable(f"MASQUERADE flags {flags:#x}")
    s = ""
    if flags & _PROTO_SPEC:
        off = 16 if rev == 0 and fam == _AF_INET else 36
        p0, p1 = struct.unpack_from(">HH", info, off)
        s += f" --to-ports {p0}" + (f"-{p1}" if p1 != p0 else "")
    if flags & _RANDOM:
        s += " --random"
    if flags & _RANDOM_FULLY:
        s += " --random-fully"
    return s


_REJECT4: tuple[str | None, ...] = ("icmp-net-unreachable", "icmp-host-unreachable", "icmp-proto-unreachable")
_REJECT4 += ("icmp-port-unreachable", None, "icmp-net-prohibited", "icmp-host-prohibited", "tcp-reset")
_REJECT4 += ("icmp-admin-prohibited",)
_REJECT6: tuple[str | None, ...] = ("icmp6-no-route", "icmp6-adm-prohibited", None, "icmp6-addr-unreachable")
_REJECT6 += ("icmp6-port-unreachable", None, "tcp-reset", "icmp6-policy-fail", "icmp6-reject-route")


def _t_reject(info: bytes, fam: int, rev: int) -> str:
    (w,) = struct.unpack_from("=I", info, 0)
    table = _REJECT4 if fam == _AF_INET else _REJECT6
    name = table[w] if w < len(table) else None
    if name is None:
        raise Untranslatable(f"REJECT --reject-with code {w}")
    return f" --reject-with {name}"


def _t_mark(info: bytes, fam: int, rev: int) -> str:
    if rev != 2:
        raise Untranslatable(f"MARK revision {rev}")
    mark, mask = struct.unpack_from("=II", info, 0)
    return f" --set-xmark 0x{mark:x}/0x{mask:x}"


def _t_connmark(info: bytes, fam: int, rev: int) -> str:
    if rev not in (1, 2):
        raise Untranslatable(f"CONNMARK revision {rev}")
    ctmark, ctmask, _nfmask = struct.unpack_from("=III", info, 0)
    mode = info[12] if rev == 1 else info[14]
    if rev == 2 and info[13]:
        raise Untranslatable("CONNMARK with a shift")
    if mode == 0:  # XT_CONNMARK_SET
        return f" --set-xmark 0x{ctmark:x}/0x{ctmask:x}"
    raise Untranslatable(f"CONNMARK mode {mode}")


def _t_tcpmss(info: bytes, fam: int, rev: int) -> str:
    (mss,) = struct.unpack_from("=H", info, 0)
    return " --clamp-mss-to-pmtu" if mss == 0xFFFF else f" --set-mss {mss}"


TARGETS: dict[str, Callable[[bytes, int, int], str]] = {
    "DNAT": _t_nat("DNAT"),
    "SNAT": _t_nat("SNAT"),
    "MASQUERADE": _t_masquerade,
    "REJECT": _t_reject,
    "MARK": _t_mark,
    "CONNMARK": _t_connmark,
    "TCPMSS": _t_tcpmss,
}
