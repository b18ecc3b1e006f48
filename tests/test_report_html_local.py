"""The HTML report of a real cluster: a ``local`` cluster (real apiserver, etcd and kube-proxy in network
namespaces, pods by kwok), before/after a Deployment with 3 replicas and its Service, rendered in headless
Chromium. With ``K8SSTATE_REPORT_EXAMPLE=docs/img/report-example.png`` the screenshot is written there (how
docs/report.md's picture is made):

    K8SSTATE_REPORT_EXAMPLE=$PWD/docs/img/report-example.png pytest tests/test_report_html_local.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from report_browser import chromium_missing, dump_dom, ink_fraction, screenshot

from pytest_k8sstate import assert_dnat_to
from pytest_k8sstate.report import write_report
from pytest_k8sstate.state.filters import Scope

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))


def _manifests(replicas: int) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.k8s.io/pause:3.10.1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    }
    return [deployment, service]


def test_report_example(  # type: ignore[no-untyped-def]
    cluster_state, k8s_api, k8sstate_namespace, k8s_cluster, tmp_path: Path
) -> None:
    ns = k8sstate_namespace
    k8s_api.apply(_manifests(3))
    k8s_api.wait_endpoints("svc/web", count=3)
    ips = sorted(k8s_api.pod_ips("app=web"))
    assert len(ips) == 3
    cluster_state.eventually(
        lambda snap: assert_dnat_to(snap, f"{ns}/web:http", endpoints=[f"{ip}:8080" for ip in ips])
    )
    after = cluster_state.after
    assert after is not None
    page = write_report(
        tmp_path / "report.html",
        cluster_state.before,
        after,
        diff=cluster_state.diff_between(cluster_state.before, after),
        scope=Scope(namespaces=(ns,)),
        title=f"k8sstate: Deployment web (3 replicas) + Service web in {ns}",
    )

    dom = dump_dom(page, tmp_path / "profile")
    keys = {li.attrs["data-key"]: li for li in dom.find_all("li", "key")}
    assert f"/registry/deployments/{ns}/web" in keys
    assert "added" in keys[f"/registry/deployments/{ns}/web"].classes
    assert f"/registry/services/specs/{ns}/web" in keys
    sections = [s for s in dom.find_all("section", "service") if s.attrs["data-service"] == f"{ns}/web:http"]
    assert {s.attrs["data-node"] for s in sections} == {n.name for n in k8s_cluster.nodes}
    for s in sections:
        endpoints = {g.attrs["data-id"]: g for g in s.find_all("g", "endpoint")}
        assert set(endpoints) == {f"endpoint:{ip}:8080" for ip in ips}
        for g in endpoints.values():  # each endpoint names its pod (from the etcd capture)
            assert "web-" in g.text
        edges = s.find_all("g", "edge")
        into = [e for e in edges if e.attrs["data-to"].startswith("endpoint:")]
        assert sorted(e.attrs["data-share"] for e in into) == ["1/3", "1/3", "1/3"]
        probs = sorted(e.attrs["data-p"] for e in edges if "KUBE-SEP-" in e.attrs["data-to"])
        if probs:  # iptables mode: the statistic rules' own probabilities
            assert probs == ["1", "1/2", "1/3"]
        rows = s.find_all("tr", "outcome")
        assert sorted(r.attrs["data-target"] for r in rows) == sorted(f"{ip}:8080" for ip in ips)

    target = os.environ.get("K8SSTATE_REPORT_EXAMPLE")
    png = Path(target) if target else tmp_path / "report.png"
    screenshot(page, png, tmp_path / "profile", size=(1280, 1400))
    width, height, ink, colours = ink_fraction(png)
    assert (width, height) == (1280, 1400)
    assert ink > 0.02, ink
    assert colours > 8, colours
