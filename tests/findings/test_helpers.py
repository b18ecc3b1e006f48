"""The findings' own helpers, checked against the seeds (no cluster needed)."""

from __future__ import annotations

from .helpers import count_endpoints_in_dump, probability_of, sep_chain, svc_chain

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
