"""Parse IPVS virtual servers from ``ipvsadm -Ln`` (listing) or ``ipvsadm -Sn`` (``--save -n``) text.

Result: :class:`VirtualServer` (``protocol`` TCP/UDP/SCTP/FWM, ``address``, ``port`` — None for FWM
services, where ``address`` is the firewall mark —, ``scheduler``, ``persistent`` seconds or None,
``options`` the remaining scheduler options) with :class:`RealServer` entries (``address``, ``port``,
``forward`` one of ``Masq``/``Route``/``Tunnel``/``Local``, ``weight``). Connection counters
(ActiveConn/InActConn) change on their own and are not kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import ParseError

__all__ = ["RealServer", "VirtualServer", "parse_ipvsadm"]

_PROTO_FLAG = {"-t": "TCP", "--tcp-service": "TCP", "-u": "UDP", "--udp-service": "UDP"}
_PROTO_FLAG.update({"--sctp-service": "SCTP", "-f": "FWM", "--fwmark-service": "FWM"})
_FWD_FLAG = {"-m": "Masq", "--masquerading": "Masq", "-g": "Route", "--gatewaying": "Route"}
_FWD_FLAG.update({"-i": "Tunnel", "--ipip": "Tunnel"})
_FORWARDS = frozenset({"Masq", "Route", "Tunnel", "Local"})
_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})$")


@dataclass
class RealServer:
    address: str
    port: int
    forward: str
    weight: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "forward": self.forward, "weight": self.weight}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(str(d["address"]), int(d["port"]), str(d["forward"]), int(d["weight"]))


@dataclass
class VirtualServer:
    protocol: str
    address: str
    port: int | None
    scheduler: str
    persistent: int | None = None
    options: list[str] = field(default_factory=list)
    real_servers: list[RealServer] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.protocol} {self.address}" + (f":{self.port}" if self.port is not None else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "address": self.address,
            "port": self.port,
            "scheduler": self.scheduler,
            "persistent": self.persistent,
            "options": list(self.options),
            "real_servers": [r.to_json() for r in self.real_servers],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        try:
            return cls(
                str(d["protocol"]),
                str(d["address"]),
                None if d["port"] is None else int(d["port"]),
                str(d["scheduler"]),
                None if d["persistent"] is None else int(d["persistent"]),
                [str(o) for o in d["options"]],
                [RealServer.from_json(r) for r in d["real_servers"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ParseError("ipvs JSON", None, "a VirtualServer object (to_json output)", repr(exc)) from exc


def _hostport(text: str, source: str, lineno: int) -> tuple[str, int]:
    m = _HOSTPORT.match(text)
    if m is None or int(m["port"]) > 65535:
        raise ParseError(source, lineno, "ADDRESS:PORT (numeric, as printed with -n)", text)
    return (m["v4"] or m["v6"]), int(m["port"])


def _int(tok: str, what: str, source: str, lineno: int) -> int:
    if not (tok.isascii() and tok.isdigit() and len(tok) <= 20):
        raise ParseError(source, lineno, f"an ASCII decimal number for {what}", tok)
    return int(tok)


def _vs_from_list(tokens: list[str], source: str, lineno: int) -> VirtualServer:
    # TCP  10.96.0.1:443 rr [persistent 10800] [mask ...] [ops] ...
    if len(tokens) < 3:
        raise ParseError(source, lineno, "'PROTO ADDRESS:PORT SCHEDULER [FLAGS]'", " ".join(tokens))
    proto = tokens[0]
    if proto == "FWM":
        addr, port = tokens[1], None
        _int(addr, "the firewall mark", source, lineno)
    else:
        addr, port = _hostport(tokens[1], source, lineno)
    vs = VirtualServer(proto, addr, port, tokens[2])
    rest = tokens[3:]
    if "persistent" in rest:
        i = rest.index("persistent")
        if i + 1 >= len(rest):
            raise ParseError(source, lineno, "seconds after 'persistent'", " ".join(tokens))
        vs.persistent = _int(rest[i + 1], "persistent", source, lineno)
        rest = rest[:i] + rest[i + 2 :]
    vs.options = rest
    return vs


def _parse_listing(lines: list[str], source: str) -> list[VirtualServer]:
    out: list[VirtualServer] = []
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith(("IP Virtual Server", "Prot LocalAddress", "-> RemoteAddress")):
            continue
        tokens = s.split()
        if tokens[0] == "->":
            # -> 10.244.0.2:53   Masq    1      0          0
            if not out:
                raise ParseError(source, lineno, "a virtual server line before its real servers", line)
            if len(tokens) < 4:
                raise ParseError(source, lineno, "'-> ADDRESS:PORT FORWARD WEIGHT ...'", line)
            addr, port = _hostport(tokens[1], source, lineno)
            if tokens[2] not in _FORWARDS:
                raise ParseError(source, lineno, "a forward method Masq, Route, Tunnel or Local", tokens[2])
            out[-1].real_servers.append(
                RealServer(addr, port, tokens[2], _int(tokens[3], "weight", source, lineno))
            )
        elif tokens[0] in ("TCP", "UDP", "SCTP", "FWM"):
            out.append(_vs_from_list(tokens, source, lineno))
        else:
            raise ParseError(
                source, lineno, "a virtual server (TCP/UDP/SCTP/FWM ...) or '-> real server' line", line
            )
    return out


def _parse_save(lines: list[str], source: str) -> list[VirtualServer]:
    out: dict[tuple[str, str], VirtualServer] = {}
    for lineno, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        cmd = tokens[0]
        if cmd not in ("-A", "-a", "--add-service", "--add-server"):
            raise ParseError(source, lineno, "a line starting with -A (service) or -a (real server)", line)
        opts: dict[str, str] = {}
        proto: str | None = None
        svc = ""
        flags: list[str] = []
        i = 1
        while i < len(tokens):
            t = tokens[i]
            if t in _PROTO_FLAG:
                if i + 1 >= len(tokens):
                    raise ParseError(source, lineno, f"a service address after {t}", line)
                proto, svc = _PROTO_FLAG[t], tokens[i + 1]
                i += 2
            elif t in _FWD_FLAG:
                opts["forward"] = _FWD_FLAG[t]
                i += 1
            elif t.startswith("-") and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                opts[t] = tokens[i + 1]
                i += 2
            else:
                flags.append(t)
                i += 1
        if proto is None:
            raise ParseError(source, lineno, "-t, -u, --sctp-service or -f with the service address", line)
        key = (proto, svc)
        if cmd in ("-A", "--add-service"):
            if proto == "FWM":
                _int(svc, "the firewall mark", source, lineno)
                addr, port = svc, None
            else:
                addr, port_i = _hostport(svc, source, lineno)
                port = port_i
            sched = opts.pop("-s", opts.pop("--scheduler", "wlc"))
            vs = VirtualServer(proto, addr, port, sched)
            pers = opts.pop("-p", opts.pop("--persistent", None))
            if pers is not None:
                vs.persistent = _int(pers, "persistent", source, lineno)
            elif "-p" in flags or "--persistent" in flags:
                vs.persistent = 300  # ipvsadm's default timeout
                flags = [f for f in flags if f not in ("-p", "--persistent")]
            vs.options = [x for kv in sorted(opts.items()) for x in kv] + flags
            out[key] = vs
        else:
            vs2 = out.get(key)
            if vs2 is None:
                raise ParseError(
                    source, lineno, f"an -A line for service {svc} before its real servers", line
                )
            rs = opts.get("-r") or opts.get("--real-server")
            if rs is None:
                raise ParseError(source, lineno, "-r ADDRESS:PORT", line)
            if ":" not in rs and vs2.port is not None:
                rs = f"{rs}:{vs2.port}"
            addr, port_r = _hostport(rs, source, lineno)
            weight = _int(opts.get("-w", opts.get("--weight", "1")), "weight", source, lineno)
            vs2.real_servers.append(RealServer(addr, port_r, opts.get("forward", "Route"), weight))
    return list(out.values())


def parse_ipvsadm(text: str | bytes, source: str = "ipvsadm") -> list[VirtualServer]:
    """Parse ``ipvsadm -Ln`` or ``ipvsadm -Sn`` output (the format is detected)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("-") and not first.startswith("->"):
        return _parse_save(lines, source)
    return _parse_listing(lines, source)
