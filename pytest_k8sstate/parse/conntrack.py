"""Parse the connection tracking table from ``conntrack -L`` (default or ``-o extended`` format).

One line per connection, e.g. (``-o extended``; the default format lacks the leading ``ipv4 2``)::

    ipv4 2 tcp 6 117 TIME_WAIT src=172.18.0.3 dst=10.96.5.7 sport=40312 dport=80 src=10.244.1.4
        dst=172.18.0.3 sport=8080 dport=40312 [ASSURED] mark=0 use=1

Result: :class:`ConntrackEntry` — ``family`` (``ipv4``/``ipv6``), ``proto`` name and number, ``timeout``
(s), ``state`` (TCP/SCTP/DCCP only, else None), the ``orig`` and ``reply`` :class:`CtTuple` (``src``,
``dst``, ``sport``/``dport`` for port protocols, the rest such as ICMP ``type``/``code``/``id`` or
accounting ``packets``/``bytes`` in ``extra``), ``flags`` (``ASSURED``, ``UNREPLIED``, ``OFFLOAD`` …),
``mark``, ``zone`` and the remaining ``key=value`` fields (``use``, ``id``, ``secctx``, ``labels`` …).
A DNAT shows as a reply tuple whose source is not the original destination (:attr:`ConntrackEntry.dnat`),
a SNAT/masquerade as a reply destination that is not the original source (:attr:`ConntrackEntry.snat`).

Bad input raises :class:`~pytest_k8sstate.errors.ParseError` naming the line and the field. The summary
``conntrack v1.4.x (conntrack-tools): N flow entries have been shown.`` (stderr, sometimes merged) and
blank lines are skipped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import ParseError

__all__ = ["ConntrackEntry", "CtTuple", "parse_conntrack"]

MAX_LINE = 4096
_FAMILIES = {"ipv4": 2, "ipv6": 10}
_PROTO = re.compile(r"[a-z][a-z0-9_-]{0,15}")
_STATE = re.compile(r"[A-Z][A-Z_]{0,19}")
_FLAG = re.compile(r"\[([A-Z][A-Z_]{0,19})\]")
_KEY = re.compile(r"[a-z][a-z0-9_-]{0,19}")
# keys that belong to a direction's tuple (everything else after the reply tuple is a per-entry field)
_TUPLE_KEYS = frozenset(
    {"src", "dst", "sport", "dport", "type", "code", "id", "srckey", "dstkey", "packets", "bytes"}
)
_PORT_KEYS = ("sport", "dport")
_INT_KEYS = frozenset({"type", "code", "id", "packets", "bytes"})
_SUMMARY = re.compile(r"conntrack v[0-9.]+ \(conntrack-tools\): ")


@dataclass(frozen=True)
class CtTuple:
    """One direction of a connection: addresses, ports (None for portless protocols), other fields."""

    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if self.sport is None:
            return f"{self.src} -> {self.dst}"
        return f"{_hostport(self.src, self.sport)} -> {_hostport(self.dst, self.dport)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "sport": self.sport,
            "dport": self.dport,
            "extra": [list(kv) for kv in self.extra],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        sport, dport = d.get("sport"), d.get("dport")
        return cls(
            str(d["src"]),
            str(d["dst"]),
            int(sport) if sport is not None else None,
            int(dport) if dport is not None else None,
            tuple((str(k), str(v)) for k, v in d.get("extra") or []),
        )


def _hostport(ip: str, port: int | None) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True)
class ConntrackEntry:
    family: str
    proto: str
    protonum: int
    timeout: int
    state: str | None
    orig: CtTuple
    reply: CtTuple
    flags: tuple[str, ...] = ()
    mark: int = 0
    zone: int | None = None
    fields: tuple[tuple[str, str], ...] = field(default=())
    """The other ``key=value`` fields after the reply tuple (``use``, ``id``, ``secctx`` …)."""

    @property
    def dnat(self) -> bool:
        """The destination was rewritten: the reply does not come from the original destination."""
        return (self.reply.src, self.reply.sport) != (self.orig.dst, self.orig.dport)

    @property
    def snat(self) -> bool:
        """The source was rewritten (masquerade/SNAT): the reply does not go to the original source."""
        return (self.reply.dst, self.reply.dport) != (self.orig.src, self.orig.sport)

    def __str__(self) -> str:
        state = f" {self.state}" if self.state else ""
        flags = "".join(f" [{f}]" for f in self.flags)
        return f"{self.proto}{state} {self.orig} | reply {self.reply}{flags} mark={self.mark}"

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "proto": self.proto,
            "protonum": self.protonum,
            "timeout": self.timeout,
            "state": self.state,
            "orig": self.orig.to_json(),
            "reply": self.reply.to_json(),
            "flags": list(self.flags),
            "mark": self.mark,
            "zone": self.zone,
            "fields": [list(kv) for kv in self.fields],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        zone = d.get("zone")
        return cls(
            family=str(d["family"]),
            proto=str(d["proto"]),
            protonum=int(d["protonum"]),
            timeout=int(d["timeout"]),
            state=str(d["state"]) if d.get("state") is not None else None,
            orig=CtTuple.from_json(d["orig"]),
            reply=CtTuple.from_json(d["reply"]),
            flags=tuple(str(f) for f in d.get("flags") or []),
            mark=int(d.get("mark") or 0),
            zone=int(zone) if zone is not None else None,
            fields=tuple((str(k), str(v)) for k, v in d.get("fields") or []),
        )


def _uint(text: str, what: str, source: str, line: int, hi: int) -> int:
    if not text.isdigit() or len(text) > 20 or int(text) > hi:
        raise ParseError(source, line, f"{what}: an integer 0..{hi}", text)
    return int(text)


def _ip(text: str, what: str, source: str, line: int) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ParseError(source, line, f"{what}: an IPv4 or IPv6 address", text) from None


def _tuple(
    kvs: list[tuple[str, str]], which: str, protonum: int, source: str, line: int, text: str
) -> CtTuple:
    d: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for k, v in kvs:
        if k in d or any(k == e for e, _ in extra):
            raise ParseError(
                source, line, f"{which} tuple: one {k}= (a key appears once per direction)", text
            )
        if k in ("src", "dst", *_PORT_KEYS):
            d[k] = v
        else:
            if k in _INT_KEYS:
                _uint(v, f"{which} {k}=", source, line, 2**64 - 1)
            extra.append((k, v))
    for k in ("src", "dst"):
        if k not in d:
            raise ParseError(source, line, f"{which} tuple: {k}=ADDRESS", text)
    src = _ip(d["src"], f"{which} src=", source, line)
    dst = _ip(d["dst"], f"{which} dst=", source, line)
    if (":" in src) != (":" in dst):
        raise ParseError(source, line, f"{which} tuple: src= and dst= of one address family", text)
    ports: list[int | None] = []
    for k in _PORT_KEYS:
        ports.append(_uint(d[k], f"{which} {k}=", source, line, 65535) if k in d else None)
    if (ports[0] is None) != (ports[1] is None):
        raise ParseError(source, line, f"{which} tuple: both sport= and dport= or neither", text)
    if protonum in (6, 17, 132, 33, 136) and ports[0] is None:
        raise ParseError(
            source, line, f"{which} tuple: sport= and dport= (protocol {protonum} has ports)", text
        )
    return CtTuple(src, dst, ports[0], ports[1], tuple(extra))


def _entry(text: str, source: str, line: int) -> ConntrackEntry:
    if len(text) > MAX_LINE:
        raise ParseError(source, line, f"a conntrack entry of at most {MAX_LINE} characters", text[:80])
    toks = text.split()
    i = 0
    family = ""
    if toks and toks[0] in _FAMILIES:  # -o extended: "ipv4 2"
        family = toks[0]
        if len(toks) < 2 or toks[1] != str(_FAMILIES[family]):
            got = toks[1] if len(toks) > 1 else "end of line"
            raise ParseError(source, line, f"layer 3 number {_FAMILIES[family]} after {family}", got)
        i = 2
    if len(toks) < i + 3:
        raise ParseError(source, line, "PROTO PROTONUM TIMEOUT then the tuples (a conntrack -L line)", text)
    proto = toks[i]
    if not _PROTO.fullmatch(proto):
        raise ParseError(source, line, "protocol name (tcp, udp, icmp, …)", proto)
    protonum = _uint(toks[i + 1], "protocol number", source, line, 255)
    timeout = _uint(toks[i + 2], "timeout (seconds)", source, line, 2**32 - 1)
    i += 3
    state = None
    if i < len(toks) and _STATE.fullmatch(toks[i]):
        state = toks[i]
        i += 1
    dirs: list[list[tuple[str, str]]] = []
    rest: list[tuple[str, str]] = []
    flags: list[str] = []
    for tok in toks[i:]:
        m = _FLAG.fullmatch(tok)
        if m:
            flags.append(m[1])
            continue
        key, eq, value = tok.partition("=")
        if not eq or not _KEY.fullmatch(key) or not value:
            raise ParseError(source, line, "KEY=VALUE or [FLAG]", tok)
        if key == "src" and len(dirs) < 2 and not rest:
            dirs.append([])
        if not dirs:
            raise ParseError(source, line, "src= (the original tuple) before other fields", tok)
        if len(dirs) == 2 and (rest or key not in _TUPLE_KEYS or any(k == key for k, _ in dirs[1])):
            rest.append((key, value))  # after the reply tuple: mark=, use=, id= (conntrack id) …
        elif key == "src" and len(dirs) == 2 and dirs[1]:
            raise ParseError(source, line, "two tuples (original, reply)", tok)
        else:
            dirs[-1].append((key, value))
    if len(dirs) != 2:
        raise ParseError(source, line, "an original and a reply tuple (two src=… dst=… groups)", text)
    orig = _tuple(dirs[0], "original", protonum, source, line, text)
    reply = _tuple(dirs[1], "reply", protonum, source, line, text)
    if (":" in orig.src) != (":" in reply.src):
        raise ParseError(source, line, "original and reply tuples of one address family", text)
    if family and (family == "ipv6") != (":" in orig.src):
        raise ParseError(source, line, f"{family} addresses", orig.src)
    mark, zone = 0, None
    others: list[tuple[str, str]] = []
    for k, v in rest:
        if k == "mark":
            mark = _uint(v, "mark=", source, line, 2**32 - 1)
        elif k == "zone":
            zone = _uint(v, "zone=", source, line, 65535)
        else:
            others.append((k, v))
    return ConntrackEntry(
        family or ("ipv6" if ":" in orig.src else "ipv4"),
        proto,
        protonum,
        timeout,
        state,
        orig,
        reply,
        tuple(flags),
        mark,
        zone,
        tuple(others),
    )


def parse_conntrack(data: bytes | str, *, source: str = "conntrack -L") -> list[ConntrackEntry]:
    """Every entry of ``conntrack -L`` output (either format, both families mixed)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(source, None, "UTF-8 text", f"undecodable byte at offset {exc.start}") from None
    else:
        text = data
    out: list[ConntrackEntry] = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or _SUMMARY.match(line):
            continue
        if "\x00" in line:
            raise ParseError(source, n, "text without NUL bytes", line)
        out.append(_entry(line, source, n))
    return out
