"""Progress of a slow cluster creation reaches the pytest terminal without breaking ``-q`` output.

The inner run's ``kind`` provider is replaced by ``SlowFakeKindProvider`` (a fake, named as such: no Docker
here for this test) whose ``create`` runs the real kind readiness wait
(:func:`pytest_k8sstate.providers.kind.ready.wait_ready`) against a real local node executor, with a
fake ``kubectl`` (a script, also named as such) on ``PATH`` that reports the worker not Ready for a
few seconds. What is checked is the plugin's side: the progress lines of that wait reach pytest's stdout
while the fixture runs under output capture, each a whole line, and ``-q``'s dots and summary stay intact.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.plugin.conftest import PluginRunner

FAKE_KUBECTL = """#!{python}
# fake kubectl (test double): the worker becomes Ready {seconds} s after the first call
import json, os, sys, time
stamp = os.environ["FAKE_KUBECTL_STAMP"]
if not os.path.exists(stamp):
    open(stamp, "w").write(str(time.time()))
ready = time.time() - float(open(stamp).read()) > {seconds}
args = sys.argv[1:]
names = os.environ["FAKE_KUBECTL_NODES"].split(",")
def node(n):
    ok = ready or n.endswith("control-plane")
    return {{"metadata": {{"name": n}}, "status": {{"conditions": [{{"type": "Ready", "status": str(ok)}}]}}}}
if "nodes" in args:
    print(json.dumps({{"items": [node(n) for n in names]}}))
elif "leases" in args:
    print(json.dumps({{"items": [{{"metadata": {{"name": n}}}} for n in names]}}))
elif "deployment" in args:
    print(json.dumps({{"spec": {{"replicas": 1}}, "status": {{"availableReplicas": 1}}}}))
else:
    sys.exit(3)
"""

FAKE_PROVIDER = '''
"""SlowFakeKindProvider: a fake kind provider (test double) whose create runs the real readiness wait."""
import os
from pathlib import Path

from pytest_k8sstate.node.exec import LocalExec
from pytest_k8sstate.providers.base import Cluster, NodeInfo, Provider
from pytest_k8sstate.providers.kind.ready import wait_ready


class SlowFakeKindProvider(Provider):
    name = "kind"

    def __init__(self, progress=None):
        self.progress = progress
        self.clusters = {}

    def create(self, spec):
        nodes = [
            NodeInfo(f"{spec.name}-control-plane", "control-plane", LocalExec("cp"), "127.0.0.1"),
            NodeInfo(f"{spec.name}-worker", "worker", LocalExec("w"), "127.0.0.1"),
        ]
        os.environ["FAKE_KUBECTL_NODES"] = ",".join(n.name for n in nodes)  # for the fake kubectl
        cluster = Cluster(
            spec.name, "kind", Path("/nonexistent/kubeconfig"), "https://127.0.0.1:1", nodes, None,
            frozenset(), spec.proxy_mode,
        )
        wait_ready(cluster, timeout=60)
        self.progress(f"cluster {spec.name!r} ready")
        self.clusters[spec.name] = cluster
        return cluster

    def delete(self, name):
        self.clusters.pop(name, None)

    def list(self):
        return list(self.clusters)

    def get(self, name):
        return self.clusters[name]


def provider(**options):
    return SlowFakeKindProvider(**options)
'''

CONFTEST = """
import sys
sys.path.insert(0, {here!r})
from pytest_k8sstate.providers import registry
registry.REGISTRY["kind"] = ("slowfake", "SlowFakeKindProvider")
"""

TESTS = """
def test_first():
    pass

def test_needs_a_cluster(k8s_cluster):
    assert k8s_cluster.name
"""


def _setup(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> Path:
    here = plugin.pytester.path
    bin_dir = here / "fakebin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, seconds=3))
    kubectl.chmod(0o755)
    (here / "slowfake.py").write_text(FAKE_PROVIDER)
    plugin.pytester.makeconftest(CONFTEST.format(here=str(here)))
    plugin.pytester.makepyfile(test_slow=TESTS)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_KUBECTL_STAMP", str(here / "stamp"))
    monkeypatch.setenv("K8SSTATE_PROGRESS_INTERVAL", "0.3")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    return here


def test_progress_of_a_slow_create_reaches_the_terminal_and_keeps_q_output_whole(
    plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(plugin, monkeypatch)
    result = plugin.run_subprocess(
        "-q", "--k8sstate-provider=kind", "--k8sstate-nodes=1", "-p", "no:randomly"
    )
    out = result.stdout.str()
    assert result.ret == 0, out + result.stderr.str()
    result.assert_outcomes(passed=2)
    lines = out.splitlines()
    still = [ln for ln in lines if "(still running, " in ln]
    assert still, out
    pattern = r"\[k8sstate\] kind cluster '[^']+': waiting for [^()]+ \(still running, \d+s elapsed\)"
    assert all(re.fullmatch(pattern, ln) for ln in still), still
    assert any("-worker (still running" in ln for ln in still), still  # names what it waits on
    # every line the plugin wrote is a whole line of its own (no "..[k8sstate]", nothing glued after it)
    for ln in lines:
        if "[k8sstate]" in ln:
            assert ln.startswith("[k8sstate] "), ln
            assert ln.count("[k8sstate]") == 1, ln
    assert lines[0] == ".", out  # test_first's dot: its line ended before the first progress line
    assert any(re.fullmatch(r"\.\s+\[100%\]", ln) for ln in lines), out  # the second dot, then [100%]
    assert re.search(r"^2 passed", out, re.M), out
    assert "\x1b" not in out  # not a terminal: plain lines only


def test_on_a_terminal_the_live_line_is_drawn_and_erased_between_the_q_dots(
    plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = _setup(plugin, monkeypatch)
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *plugin.plugin_args,
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
    ]
    proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
        [*argv, "-q", "--k8sstate-provider=kind", "--k8sstate-nodes=1", "--color=no"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=here,
        start_new_session=True,
    )
    os.close(slave)
    got = b""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            got += chunk
        assert proc.wait(timeout=60) == 0, got.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        os.close(master)
    out = got.decode(errors="replace")
    draws = re.findall(r"\r\x1b\[K(\[k8sstate\] kind cluster '[^']+'[^\r\n]*)", out)
    assert any(re.search(r": waiting for [\w-]+-worker \d+s$", d) for d in draws), out
    assert "(still running" not in out  # a terminal gets the live line, not the plain lines
    tail = out[out.rindex("\r\x1b[K") :]
    assert tail.startswith("\r\x1b[K[k8sstate] cluster '")  # erased, then the provider's own line
    assert re.search(r"^2 passed", out.replace("\r\n", "\n"), re.M), out
