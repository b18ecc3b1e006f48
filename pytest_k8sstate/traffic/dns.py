"""DNS answers as a pod sees them: busybox ``nslookup`` run in a pod (the agnhost image's ``/bin/busybox``).

:func:`parse_nslookup` reads busybox's output (both the 1.28 layout ``Address 1: IP NAME`` and the later
``Name:``/``Address:`` one) into a :class:`DnsAnswer`: the server that answered, the addresses per name,
CNAMEs, and the names the server could not find (busybox 1.35 asks a dotless name under every search
domain and prints a ``** server can't find NAME: NXDOMAIN`` line for each one that failed — the search
expansion, visible; a dotted name it asks only as is, whatever ``ndots`` says).
:func:`nslookup` runs it through any :class:`~pytest_k8sstate.node.exec.NodeExec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_k8sstate.errors import ConfigError, K8sStateError
from pytest_k8sstate.node.exec import NodeExec

__all__ = ["DnsAnswer", "nslookup", "parse_nslookup", "parse_resolv_conf"]

_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?\.?")
_TYPES = ("a", "aaaa", "cname", "srv", "txt", "ns", "soa", "ptr", "mx", "any")


@dataclass(frozen=True)
class DnsAnswer:
    """One ``nslookup`` run: ``addresses`` name → IPs (answer order), ``cnames`` name → canonical name,
    ``not_found`` names answered NXDOMAIN (or another failure), ``server`` the resolver that answered."""

    query: str
    server: str | None = None
    addresses: dict[str, list[str]] = field(default_factory=dict)
    cnames: dict[str, str] = field(default_factory=dict)
    not_found: dict[str, str] = field(default_factory=dict)  # name -> reason (NXDOMAIN, SERVFAIL, ...)
    text: str = ""

    def all_addresses(self) -> list[str]:
        return [ip for ips in self.addresses.values() for ip in ips]


def parse_nslookup(text: str, query: str = "") -> DnsAnswer:
    """busybox ``nslookup`` output → :class:`DnsAnswer` (no I/O; never raises on unknown lines)."""
    server: str | None = None
    addresses: dict[str, list[str]] = {}
    cnames: dict[str, str] = {}
    not_found: dict[str, str] = {}
    name: str | None = None
    seen_server = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"Server:\s*(\S+)", line)
        if m and not seen_server:
            seen_server = True
            server = m[1]
            name = None
            continue
        m = re.match(r"\*\*\*? (?:server can't find|Can't find) (\S+?):\s*(.+)$", line)
        if m:
            not_found[m[1].rstrip(".")] = m[2].strip()
            continue
        m = re.match(r"(\S+)\s+canonical name = (\S+)", line)
        if m:
            cnames[m[1].rstrip(".")] = m[2].rstrip(".")
            continue
        m = re.match(r"Name:\s*(\S+)", line)
        if m:
            name = m[1].rstrip(".")
            continue
        m = re.match(r"Address(?:\s+\d+)?:\s*(\S+)(?:\s+(\S+))?", line)
        if m:
            ip = m[1]
            if name is None:
                # the server's own address (before any Name:), e.g. "Address: 10.96.0.10:53"
                if server is None:
                    server = ip
                continue
            addresses.setdefault(name, []).append(ip)
    return DnsAnswer(query, server, addresses, cnames, not_found, text)


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], dict[str, str]]:
    """``/etc/resolv.conf`` → (nameservers, search list, options as name → value ("" for flags))."""
    servers: list[str] = []
    search: list[str] = []
    options: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search = fields[1:]
        elif fields[0] == "options":
            for opt in fields[1:]:
                key, _, value = opt.partition(":")
                options[key] = value
    return servers, search, options


def nslookup(
    exec: NodeExec,
    name: str,
    *,
    type: str = "a",
    server: str | None = None,
    busybox: str = "/bin/busybox",
    timeout: float = 30.0,
) -> DnsAnswer:
    """``busybox nslookup -type=TYPE NAME [SERVER]`` through ``exec`` (a pod; ``server`` default: the
    first nameserver of its resolv.conf); the answer whatever the exit code
    (busybox exits 1 when any of its search-domain queries failed), K8sStateError if nothing was parsed."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"DNS name {name!r}: expected letters, digits, '-' and '.' (at most 253)")
    if type.lower() not in _TYPES:
        raise ConfigError(f"DNS query type {type!r}: expected one of {', '.join(_TYPES)}")
    if server is not None and not re.fullmatch(r"[0-9a-fA-F.:\[\]]+", server):
        raise ConfigError(f"DNS server {server!r}: expected IP or IP:PORT")
    argv = [busybox, "nslookup", f"-type={type.lower()}", name, *([server] if server else [])]
    res = exec.run(argv, timeout=timeout, check=False)
    text = res.text + res.stderr.decode(errors="replace")
    answer = parse_nslookup(text, name)
    if answer.server is None and not answer.addresses and not answer.cnames and not answer.not_found:
        raise K8sStateError(
            f"nslookup {name} in {getattr(exec, 'where', exec)}: no answer (exit {res.returncode}): "
            f"{text.strip()[-300:]!r}"
        )
    return answer
