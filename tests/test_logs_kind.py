"""Per-step logs (``diff.logs``) on a real kind cluster: only the lines written between the step's two
snapshots, kube-proxy's among them, filterable, and in the artifacts.

kube-proxy logs nothing at its default verbosity when a Service changes (its "Syncing iptables rules" line
is ``V(2)``), so the step restarts kube-proxy on one worker — its new pod's start-up lines ("Version
info", "Caches are synced") are written between the snapshots — and creates a Service, whose
``"allocated clusterIPs"`` line the kube-apiserver writes. A Service created just *before* the step must
not show up. Runs where the cluster has a container runtime (``--k8sstate-provider kind``); skipped with
the reason on ``local`` (``tests/test_logs.py`` covers ``local``'s files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.assertions import assert_logs_contain
from pytest_k8sstate.plugin.state import write_artifacts
from pytest_k8sstate.util.poll import wait_until

pytestmark = pytest.mark.k8sstate_needs("container-runtime")


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def _proxy_pods(k8s_api: Any, node: str) -> list[dict[str, Any]]:
    return list(
        k8s_api.list(
            "pods", "k8s-app=kube-proxy", namespace="kube-system", field_selector=f"spec.nodeName={node}"
        )
    )


def _restart_kube_proxy(k8s_api: Any, node: str) -> None:
    [old] = _proxy_pods(k8s_api, node)
    k8s_api.delete(f"pod/{old['metadata']['name']}", namespace="kube-system", timeout=60)

    def ready() -> str | None:
        pods = _proxy_pods(k8s_api, node)
        ok = [
            p
            for p in pods
            if p["metadata"]["uid"] != old["metadata"]["uid"]
            and any(c.get("ready") for c in (p.get("status") or {}).get("containerStatuses") or [])
        ]
        if not ok:
            return f"kube-proxy pods on {node}: {[p['metadata']['name'] for p in pods]}"
        # Ready is only "running" (kube-proxy has no readiness probe): on a busy cluster its caches sync
        # seconds later, and the step must include that line
        log = k8s_api.logs(ok[0]["metadata"]["name"], namespace="kube-system")
        return None if '"Caches are synced"' in log else f"{ok[0]['metadata']['name']}: caches not synced yet"

    wait_until(f"a new synced kube-proxy pod on {node}", ready, timeout=180, interval=0.5, max_interval=2)


def test_a_steps_logs_are_the_lines_written_between_its_snapshots(
    k8s_cluster: Any, cluster_state: Any, k8s_api: Any, tmp_path: Path
) -> None:
    ns = cluster_state.namespace
    worker = k8s_cluster.workers[0].name
    control = k8s_cluster.control_plane.name
    k8s_api.apply(_service("early"))
    k8s_api.wait_for(
        "service/early",
        lambda o: (bool(o and o["spec"].get("clusterIP")), "no clusterIP"),
        what="a ClusterIP",
    )
    start = cluster_state.snapshot("start")
    k8s_api.apply(_service("step"))
    _restart_kube_proxy(k8s_api, worker)
    diff = cluster_state.diff(since="start")
    assert diff.logs is not None, "the cluster_state fixture took no log cursors (K8SSTATE_LOGS=0?)"

    # the apiserver's line for the Service of the step, not for the one created before it
    assert_logs_contain(diff, rf'"allocated clusterIPs" service="{ns}/step"', component="kube-apiserver")
    assert not diff.logs.grep(rf'service="{ns}/early"'), "a line written before the step leaked in"

    # kube-proxy's start-up lines on the restarted worker, and only there
    proxy = diff.logs.filter(component="kube-proxy", node=worker)
    assert proxy.keys() == [f"{worker}/kube-proxy"], diff.logs.keys()
    lines = proxy[f"{worker}/kube-proxy"]
    assert any('"Version info"' in ln for ln in lines), lines[:20]
    assert any('"Caches are synced"' in ln for ln in lines), lines[:20]
    assert not diff.logs.grep('"Version info"', component="kube-proxy", node=control)
    synced = diff.logs.filter(component="kube-*", pattern="Caches are synced")
    assert synced.keys()
    assert all("Caches are synced" in ln for _, ln in synced.grep(""))

    # kept with the diff in the artifacts: step-logs.txt and diff.json's "logs"
    written = write_artifacts(tmp_path, before=start, after=cluster_state.after, diff=diff)
    assert tmp_path / "step-logs.txt" in written
    text = (tmp_path / "step-logs.txt").read_text()
    assert f'service="{ns}/step"' in text
    assert '"Version info"' in text
    saved = json.loads((tmp_path / "diff.json").read_text())
    chunks = saved["logs"]["chunks"][f"{worker}/kube-proxy"]
    assert any('"Version info"' in line for chunk in chunks for line in chunk["lines"]), chunks
