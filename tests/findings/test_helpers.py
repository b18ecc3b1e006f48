"""The findings' own helpers, checked against the seeds (no cluster needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_k8sstate.parse.ipvs import parse_ipvsadm

from .helpers import (
    count_endpoints_in_dump,
    interface_addresses,
    ipvs_virtual_server,
    probability_of,
    sep_chain,
    svc_chain,
)

# Seed 002, section 'Cluster IP': iptables-save | grep "my-service" (three endpoints)
SEED_002_DUMP = """\
-A KUBE-SEP-74M76R3MOH5BJ7FU -s 10.0.2.51/32 -m comment --comment "default/my-service" -j KUBE-MARK-MASQ
-A KUBE-SEP-74M76R3MOH5BJ7FU -p tcp -m comment --comment "default/my-service" -m tcp -j DNAT --to-destination 10.0.2.51:9376
-A KUBE-SEP-JPAADZTWUNYJQEJV -s 10.0.1.30/32 -m comment --comment "default/my-service" -j KUBE-MARK-MASQ
-A KUBE-SEP-JPAADZTWUNYJQEJV -p tcp -m comment --comment "default/my-service" -m tcp -j DNAT --to-destination 10.0.1.30:9376
-A KUBE-SEP-KVEHKWBOWX3KCL2I -s 10.0.2.167/32 -m comment --comment "default/my-service" -j KUBE-MARK-MASQ
-A KUBE-SEP-KVEHKWBOWX3KCL2I -p tcp -m comment --comment "default/my-service" -m tcp -j DNAT --to-destination 10.0.2.167:9376
-A KUBE-SERVICES -d 10.104.92.240/32 -p tcp -m comment --comment "default/my-service cluster IP" -m tcp --dport 80 -j KUBE-SVC-FXIYY6OHUSNBITIX
-A KUBE-SVC-FXIYY6OHUSNBITIX -m comment --comment "default/my-service" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-JPAADZTWUNYJQEJV
-A KUBE-SVC-FXIYY6OHUSNBITIX -m comment --comment "default/my-service" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-KVEHKWBOWX3KCL2I
-A KUBE-SVC-FXIYY6OHUSNBITIX -m comment --comment "default/my-service" -j KUBE-SEP-74M76R3MOH5BJ7FU
"""  # noqa: E501


def test_chain_names_reproduce_the_seed():
    """The chain names in seed 002's dumps are kube-proxy's hashes of the service port (and endpoint):
    the helpers that predict chain names for the findings give exactly the seed's names."""
    assert svc_chain("default/my-service") == "KUBE-SVC-FXIYY6OHUSNBITIX"
    assert svc_chain("default/web-svc-cip") == "KUBE-SVC-6CZTMAROCN3AQODZ"
    assert sep_chain("default/my-service", "10.0.2.51:9376") == "KUBE-SEP-74M76R3MOH5BJ7FU"
    assert sep_chain("default/my-service", "10.0.1.30:9376") == "KUBE-SEP-JPAADZTWUNYJQEJV"
    assert sep_chain("default/my-service", "10.0.2.167:9376") == "KUBE-SEP-KVEHKWBOWX3KCL2I"


def test_dump_reading_helpers_on_the_seed():
    assert count_endpoints_in_dump(SEED_002_DUMP, "default/my-service", "iptables") == 3
    assert count_endpoints_in_dump(SEED_002_DUMP, "default/my", "iptables") == 0
    probabilities = [
        probability_of(line.split(" ", 2)[2])
        for line in SEED_002_DUMP.splitlines()
        if line.startswith("-A KUBE-SVC-")
    ]
    assert probabilities == ["0.33333333349", "0.50000000000", None]


# ipvsadm -Ln on an IPVS-mode node: a weighted-rr server on a neighbouring ClusterIP beside the rr one
IPVSADM_LN = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.10:80 wrr
  -> 10.244.1.9:8080              Masq    1      0          0
TCP  10.96.0.1:80 rr
  -> 10.244.1.2:8080              Masq    1      0          0
  -> 10.244.2.3:8080              Masq    1      0          0
TCP  10.96.0.1:443 rr
  -> 172.18.0.2:6443              Masq    1      0          0
UDP  10.96.0.1:80 rr
"""


def test_ipvs_virtual_server_compares_fields_exactly():
    """Finding 11 picks the ClusterIP's virtual server by protocol, address and port: a text match would
    also take 10.96.0.10:80 for 10.96.0.1:80 (and the dataclass repr holds no "10.96.0.1:80" at all), and
    "rr" in the text would also accept wrr."""
    node = SimpleNamespace(ipvs=parse_ipvsadm(IPVSADM_LN))
    assert all("10.96.0.1:80" not in str(vs) for vs in node.ipvs)  # why the old filter found nothing
    vs = ipvs_virtual_server(node, "10.96.0.1", 80)
    assert (vs.protocol, vs.address, vs.port, vs.scheduler) == ("TCP", "10.96.0.1", 80, "rr")
    assert [(rs.address, rs.port, rs.forward) for rs in vs.real_servers] == [
        ("10.244.1.2", 8080, "Masq"),
        ("10.244.2.3", 8080, "Masq"),
    ]
    assert ipvs_virtual_server(node, "10.96.0.10", 80).scheduler == "wrr"
    assert ipvs_virtual_server(node, "10.96.0.1", 80, "UDP").real_servers == []
    with pytest.raises(AssertionError, match=r"0 IPVS virtual servers TCP 10\.96\.0\.1:8080;"):
        ipvs_virtual_server(node, "10.96.0.1", 8080)


def test_interface_addresses_match_the_interface_name_exactly():
    node = SimpleNamespace(
        addrs=[
            {"ifname": "kube-ipvs0", "local": "10.96.0.1"},
            {"ifname": "kube-ipvs0", "local": "10.96.0.10"},
            {"ifname": "eth0", "local": "172.18.0.2"},
            {"ifname": "kube-ipvs01", "local": "10.96.0.99"},
        ]
    )
    assert interface_addresses(node, "kube-ipvs0") == {"10.96.0.1", "10.96.0.10"}
    assert interface_addresses(node, "lo") == set()
