"""``k8s_api.load_image`` / ``exec`` / ``logs`` / ``port_forward`` through the plugin (pytester) on kind.

The inner session runs with ``--k8sstate-provider kind``; with ``K8SSTATE_EXISTING_KIND=NAME`` it reuses that
cluster (``--k8sstate-reuse-cluster``, kept afterwards: ``scripts/kind-e2e.sh`` deletes it), else it creates a
one-worker cluster of its own and deletes it. Skips without the kind node image (``K8SSTATE_KIND_IMAGE``).
The workload is the offline agnhost image (``netexec``): built in the project's engine, then loaded into the
nodes by the test itself through ``k8s_api.load_image``.
"""

from __future__ import annotations

import os
import re
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

DOC = Path(__file__).resolve().parent.parent / "docs" / "existing.md"
DOC_TAG = "k8sstate.local/agnhost:v1.37.1"


def doc_example() -> str:
    """The ``python`` block of docs/existing.md that starts with ``# test_workloads.py``."""
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        if block.startswith("# test_workloads.py"):
            return str(block)
    raise AssertionError(f"{DOC}: no python block starting with '# test_workloads.py'")


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
    pytester.makepyfile(test_workloads=doc_example().replace(DOC_TAG, agnhost_tag))
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
