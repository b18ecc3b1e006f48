"""Finding 31: killing a pod's app container restarts only that container: the pause sandbox, its network
namespace and the pod IP stay, and the same IP answers again."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_k8sstate.traffic import probe

from .helpers import wait_until
from .workloads import agnhost_docs, agnhost_on_nodes, crictl_json, kubectl


def _sandboxes(node: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = crictl_json(node, "pods", "--name", "f31-web", "--namespace", "default")[
        "items"
    ]
    return items


def _container(node: Any, sandbox: str) -> dict[str, Any]:
    """The pod's running app container (crictl ps of the sandbox)."""
    [c] = crictl_json(node, "ps", "--pod", sandbox, "--name", "netexec")["containers"]
    return dict(c)


@pytest.mark.k8sstate_finding(31, "a container restart keeps the pause sandbox, its netns and the pod IP")
@pytest.mark.k8sstate_needs("container-runtime", "kubelet")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_31_container_restart_keeps_sandbox_and_ip(k8s_cluster, k8s_api):
    """Seed 000 (article), step 'create the first simple Pod': "the second container is called pause and
    is needed to reserve the namespace for the Pod" — so the app container can die and come back into the
    same network namespace. Seed 002, section 'Pause-container': it holds the pod's network configuration.

    One agnhost pod ``f31-web``. Its app container's process is killed with SIGKILL on the node (a
    crash, not a kubectl delete). Checked:

    * the kubelet restarts the container (restartCount 1, last state terminated, exit code 137) in the
      *same* sandbox: one sandbox for the pod before and after, same ID, still ready, same pause process;
    * the new container (a new ID and process) joins the same network namespace, and the pod keeps its IP
      (``status.podIP`` and the sandbox's own network status);
    * real traffic: the pod IP answers from this pod before and after the restart.
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(agnhost_docs("31-restart.yaml", tag))
    pod = k8s_api.wait_ready("pod/f31-web", timeout=180)
    pod_ip = pod["status"]["podIP"]
    uid = pod["metadata"]["uid"]
    node_name = pod["spec"]["nodeName"]
    node = k8s_cluster.node(node_name).exec
    kc = kubectl()

    before = probe(k8s_cluster, f"{pod_ip}:8080", source=f"node/{node_name}", count=5, kubectl=kc)
    assert before.counts() == {"f31-web": 5}, before.connections[:2]
    [sandbox] = _sandboxes(node)
    assert sandbox["state"] == "SANDBOX_READY", sandbox
    sinfo = crictl_json(node, "inspectp", sandbox["id"])
    pause_pid = sinfo["info"]["pid"]
    assert sinfo["status"]["network"]["ip"] == pod_ip, sinfo["status"]["network"]
    app = _container(node, sandbox["id"])
    app_pid = crictl_json(node, "inspect", app["id"])["info"]["pid"]
    netns = node.run(["readlink", f"/proc/{app_pid}/ns/net"], timeout=10).text.strip()
    assert netns == node.run(["readlink", f"/proc/{pause_pid}/ns/net"], timeout=10).text.strip()

    node.run(["sh", "-c", 'kill -KILL "$0"', str(app_pid)], timeout=10)

    def restarted() -> dict[str, Any] | None:
        p = k8s_api.get("pod/f31-web")
        [cs] = p["status"].get("containerStatuses") or [{}]
        return (
            p
            if cs.get("restartCount") == 1 and cs.get("ready") and "running" in cs.get("state", {})
            else None
        )

    pod = wait_until("f31-web's container restarted and ready", restarted, timeout=120)
    [cs] = pod["status"]["containerStatuses"]
    assert cs["lastState"]["terminated"]["exitCode"] == 137, cs["lastState"]
    assert pod["status"]["podIP"] == pod_ip
    assert pod["metadata"]["uid"] == uid  # the same Pod object, not a replacement

    after_sandboxes = _sandboxes(node)
    assert [(s["id"], s["state"]) for s in after_sandboxes] == [(sandbox["id"], "SANDBOX_READY")], (
        after_sandboxes
    )
    sinfo2 = crictl_json(node, "inspectp", sandbox["id"])
    assert sinfo2["info"]["pid"] == pause_pid
    assert sinfo2["status"]["network"]["ip"] == pod_ip
    new_app = _container(node, sandbox["id"])
    assert new_app["id"] != app["id"]
    new_pid = crictl_json(node, "inspect", new_app["id"])["info"]["pid"]
    assert new_pid != app_pid
    assert node.run(["readlink", f"/proc/{new_pid}/ns/net"], timeout=10).text.strip() == netns

    after = probe(k8s_cluster, f"{pod_ip}:8080", source=f"node/{node_name}", count=5, kubectl=kc)
    assert after.counts() == {"f31-web": 5}, after.connections[:2]
    print(f"\n[f31] {pod_ip} kept; sandbox {sandbox['id'][:12]} (pause pid {pause_pid}); netns {netns}")
