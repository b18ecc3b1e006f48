"""DNS answers (pytest_k8sstate.traffic.dns): the real busybox ``nslookup`` against a small DNS server on
loopback (A, CNAME, NXDOMAIN), and busybox's output layouts (search-domain failures, the 1.28 layout)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.node.exec import LocalExec
from pytest_k8sstate.traffic.dns import nslookup, parse_nslookup, parse_resolv_conf
from pytest_k8sstate.traffic.probe import HOST_BUSYBOX

needs_busybox = pytest.mark.skipif(
    not Path(HOST_BUSYBOX).is_file(), reason=f"{HOST_BUSYBOX} missing: apt-get install busybox-static"
)


def _name(n: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in n.split(".")) + b"\0"


def _answer(query: bytes) -> bytes:
    """A (10.96.7.8) for web.default.svc.cluster.local, CNAME for db.…, NXDOMAIN for anything else."""
    qid = struct.unpack("!H", query[:2])[0]
    i, labels = 12, []
    while query[i]:
        labels.append(query[i + 1 : i + 1 + query[i]].decode())
        i += 1 + query[i]
    qtype = struct.unpack("!H", query[i + 1 : i + 3])[0]
    name = ".".join(labels)
    answers: list[tuple[int, bytes]] = []
    if name == "web.default.svc.cluster.local" and qtype == 1:
        answers = [(1, socket.inet_aton("10.96.7.8")), (1, socket.inet_aton("10.96.7.9"))]
    elif name == "db.default.svc.cluster.local" and qtype in (1, 5):
        answers = [(5, _name("my.database.example.com"))]
    rcode = 0 if answers else 3
    out = struct.pack("!HHHHHH", qid, 0x8580 | rcode, 1, len(answers), 0, 0) + query[12 : i + 5]
    for rtype, rdata in answers:
        out += struct.pack("!HHHIH", 0xC00C, rtype, 1, 30, len(rdata)) + rdata
    return out


@pytest.fixture
def dns_server() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(512)
            except TimeoutError:
                continue
            sock.sendto(_answer(data), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join(5)
    sock.close()


@needs_busybox
def test_real_nslookup_a_cname_nxdomain(dns_server: str) -> None:
    ex = LocalExec("local")
    a = nslookup(ex, "web.default.svc.cluster.local", server=dns_server, busybox=HOST_BUSYBOX)
    assert a.server == dns_server
    assert a.addresses == {"web.default.svc.cluster.local": ["10.96.7.8", "10.96.7.9"]}
    assert a.cnames == {}
    assert a.not_found == {}
    cname = nslookup(
        ex, "db.default.svc.cluster.local", type="cname", server=dns_server, busybox=HOST_BUSYBOX
    )
    assert cname.cnames == {"db.default.svc.cluster.local": "my.database.example.com"}
    assert cname.addresses == {}
    nx = nslookup(ex, "nope.default.svc.cluster.local", server=dns_server, busybox=HOST_BUSYBOX)
    assert nx.addresses == {}
    assert nx.not_found == {"nope.default.svc.cluster.local": "NXDOMAIN"}


def test_parse_search_expansion_layout() -> None:
    text = (
        "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n"
        "** server can't find web.svc.cluster.local: NXDOMAIN\n\n"
        "** server can't find web.cluster.local: NXDOMAIN\n\n"
        "Name:\tweb.default.svc.cluster.local\nAddress: 10.96.7.8\n\n"
        "*** Can't find web: No answer\n"
    )
    ans = parse_nslookup(text, "web")
    assert ans.server == "10.96.0.10"
    assert ans.addresses == {"web.default.svc.cluster.local": ["10.96.7.8"]}
    assert ans.not_found == {
        "web.svc.cluster.local": "NXDOMAIN",
        "web.cluster.local": "NXDOMAIN",
        "web": "No answer",
    }


def test_parse_busybox_128_layout() -> None:
    text = (
        "Server:    10.96.0.10\nAddress 1: 10.96.0.10 kube-dns.kube-system.svc.cluster.local\n\n"
        "Name:      web-headless\nAddress 1: 10.244.1.2 10-244-1-2.web-headless.default.svc.cluster.local\n"
        "Address 2: 10.244.1.3 10-244-1-3.web-headless.default.svc.cluster.local\n"
    )
    ans = parse_nslookup(text)
    assert ans.server == "10.96.0.10"
    assert ans.all_addresses() == ["10.244.1.2", "10.244.1.3"]


def test_parse_resolv_conf() -> None:
    servers, search, options = parse_resolv_conf(
        "# kubelet\nnameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5 edns0\n"
    )
    assert servers == ["10.96.0.10"]
    assert search == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert options == {"ndots": "5", "edns0": ""}


@pytest.mark.parametrize(
    ("name", "kw"),
    [("a b", {}), ("-rm", {}), ("x" * 300, {}), ("web", {"type": "axfr"}), ("web", {"server": "1.2.3.4;x"})],
)
def test_bad_input_is_one_message(name: str, kw: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        nslookup(LocalExec("local"), name, **kw)  # type: ignore[arg-type]
