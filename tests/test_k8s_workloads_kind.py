"""``k8s_api.load_image`` / ``exec`` / ``logs`` / ``port_forward`` through the plugin (pytester) on kind.

The inner session runs with ``--k8sstate-provider kind``; with ``K8SSTATE_EXISTING_KIND=NAME`` it reuses that
cluster (``--k8sstate-reuse-cluster``, kept afterwards: ``scripts/kind-e2e.sh`` deletes it), else it creates a
one-worker cluster of its own and deletes it. Skips without the kind node image (``K8SSTATE_KIND_IMAGE``).
The workload is the offline agnhost image (``netexec``): built in the project's engine, then loaded into the
nodes by the test itself through ``k8s_api.load_image``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from pytest_k8sstate.binaries import ensure_binaries
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.kind.image.agnhost import ensure_agnhost_image
from pytest_k8sstate.traffic.probe import HOST_BUSYBOX
from pytest_k8sstate.util.files import cache_dir

pytestmark = pytest.mark.skipif(
    not (os.environ.get("K8SSTATE_EXISTING_KIND") or os.environ.get("K8SSTATE_KIND_IMAGE")),
    reason="needs a kind cluster: K8SSTATE_EXISTING_KIND=NAME (reused) or K8SSTATE_KIND_IMAGE (a node image "
    "in the project's Docker engine; a cluster is created) and DOCKER_HOST",
)

INNER = """
import urllib.request

import pytest

from pytest_k8sstate.errors import K8sStateError

TAG = {tag!r}


def pod(name, labels):
    return {{
        "apiVersion": "v1", "kind": "Pod", "metadata": {{"name": name, "labels": labels}},
        "spec": {{"containers": [{{
            "name": "agnhost", "image": TAG, "imagePullPolicy": "Never",
            "args": ["netexec", "--http-port=8080"],
            "ports": [{{"name": "http", "containerPort": 8080}}],
            "readinessProbe": {{"httpGet": {{"path": "/readyz", "port": 8080}}, "periodSeconds": 1}},
        }}]}},
    }}


SVC = {{
    "apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web"}},
    "spec": {{"selector": {{"app": "web"}}, "ports": [{{"name": "web", "port": 80, "targetPort": "http"}}]}},
}}


def get(host, port, path):
    with urllib.request.urlopen(f"http://{{host}}:{{port}}{{path}}", timeout=30) as r:
        return r.read().decode()


def test_workload_helpers(k8s_api):
    loaded = k8s_api.load_image(TAG)
    assert set(loaded) == set(k8s_api.nodes())
    assert set(loaded.values()) <= {{"loaded", "present"}}
    k8s_api.apply([pod("web-0", {{"app": "web"}}), SVC])
    k8s_api.wait_ready("pod/web-0", timeout=120)

    res = k8s_api.exec("web-0", ["hostname"])
    assert (res.stdout.strip(), res.exit_code, res.ok) == ("web-0", 0, True)
    res = k8s_api.exec("pod/web-0", ["sh", "-c", "echo out; echo err >&2; exit 3"], container="agnhost")
    assert (res.stdout, res.stderr, res.exit_code, res.ok) == ("out\\n", "err\\n", 3, False)
    with pytest.raises(K8sStateError, match="no-such-binary"):
        k8s_api.exec("web-0", ["no-such-binary"])
    with pytest.raises(K8sStateError, match="still running after 1s"):
        k8s_api.exec("web-0", ["sleep", "30"], timeout=1)

    with k8s_api.port_forward("web-0", 8080) as (host, port):
        assert host == "127.0.0.1"
        assert get(host, port, "/hostname") == "web-0"
        assert get(host, port, "/echo?msg=again") == "again"  # a second connection, its own stream
    with k8s_api.port_forward("service/web", "web") as (host, port):
        assert get(host, port, "/hostname") == "web-0"

    log = k8s_api.logs("web-0")
    assert "Started HTTP server on port 8080" in log
    assert log.count("GET /hostname") >= 2
    assert k8s_api.logs("web-0", container="agnhost", tail=1).count("\\n") == 1
"""


REAL_CACHE = str(cache_dir())  # pytester points HOME elsewhere: keep the binaries and kind clusters' cache


@pytest.fixture(scope="module")
def agnhost_tag() -> str:
    if not Path(HOST_BUSYBOX).is_file():
        pytest.skip(f"{HOST_BUSYBOX} missing (the agnhost image's shell): apt-get install busybox-static")
    bins = ensure_binaries(["agnhost"])
    docker = DockerCli(os.environ.get("DOCKER_HOST"))
    return ensure_agnhost_image(docker, bins["agnhost"], Path(HOST_BUSYBOX), bins.versions.agnhost).tag


def test_workload_helpers_on_kind(
    agnhost_tag: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", REAL_CACHE)
    pytester.makepyfile(test_inner=textwrap.dedent(INNER.format(tag=agnhost_tag)))
    name = os.environ.get("K8SSTATE_EXISTING_KIND")
    cluster = ["--k8sstate-reuse-cluster", name] if name else []
    res = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--k8sstate-provider",
        "kind",
        "--k8sstate-nodes",
        "1",
        *cluster,
        timeout=900,
    )
    res.assert_outcomes(passed=1)
