"""kube-proxy's own nftables packet-flow expectations, produced at test time from the Go module cache.

kube-proxy's ``pkg/proxy/nftables`` unit tests sync a fake proxier into a ``knftables.Fake`` and then
check ``packetFlowTest`` cases (source, destination, expected output, masquerade) against it with
their own small tracer. Nothing of that is committed here: :func:`upstream_flows` copies the test
package from the module cache into a scratch wrapper module, adds one call at the top of
``runPacketFlowTests`` to a recorder of ours (which writes each fake's ``Dump()`` — ``nft -f`` text —
and its flow cases as one JSON line), runs ``go test`` once and caches the JSON lines per version
under the cache dir (``$K8SSTATE_CACHE_DIR``). The first run compiles kube-proxy's tests (minutes on
a small machine); later runs read the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_k8sstate.binaries.gomod import kubernetes_wrapper_gomod
from pytest_k8sstate.util.files import atomic_write_text, cache_dir

VERSION = "v1.37.1"
PACKAGE = "pkg/proxy/nftables"
_ANCHOR = "testCases []packetFlowTest) {\n"
_STATE_ANCHOR = "func assertNFTablesTransactionEqual(t *testing.T, line string, expected, result string) {\n"
_FORMAT = 2  # of the cached JSON lines: bump when the recorder changes

_RECORDER = """package nftables

import (
	"encoding/json"
	"os"
	"testing"

	"sigs.k8s.io/knftables"
)

// k8sstateRecordState appends an expected ruleset (the text a test compares the fake's dump with).
func k8sstateRecordState(t *testing.T, line string, expected string) {
	k8sstateWrite(t, map[string]any{
		"test": t.Name(), "line": line, "dump": expected,
		"node_ips": []string{}, "flows": []any{}, "kind": "expected",
	})
}

// k8sstateRecord appends the fake's ruleset and the flow cases checked against it to $K8SSTATE_FLOW_OUT.
func k8sstateRecord(t *testing.T, line string, nft *knftables.Fake, nodeIPs []string, tcs []packetFlowTest) {
	out := os.Getenv("K8SSTATE_FLOW_OUT")
	if out == "" {
		return
	}
	type flow struct {
		Name, Src, Proto, Dst, Output string
		Port                          int
		Masq                          bool
	}
	flows := []flow{}
	for _, tc := range tcs {
		flows = append(flows, flow{
			tc.name, tc.sourceIP, string(tc.protocol), tc.destIP, tc.output, tc.destPort, tc.masq,
		})
	}
	k8sstateWrite(t, map[string]any{
		"test": t.Name(), "line": line, "dump": nft.Dump(),
		"node_ips": nodeIPs, "flows": flows, "kind": "flows",
	})
}

func k8sstateWrite(t *testing.T, record map[string]any) {
	out := os.Getenv("K8SSTATE_FLOW_OUT")
	if out == "" {
		return
	}
	b, err := json.Marshal(record)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\\n')); err != nil {
		t.Fatal(err)
	}
}
"""


@dataclass(frozen=True)
class Flow:
    test: str
    name: str
    src: str
    proto: str
    dst: str
    port: int
    output: str
    masq: bool


@dataclass(frozen=True)
class FlowGroup:
    test: str
    line: str
    dump: str
    node_ips: tuple[str, ...]
    flows: tuple[Flow, ...]
    kind: str  # "flows": a fake's dump and its flow cases; "expected": a test's expected ruleset text


def module_dir(version: str = VERSION) -> Path | None:
    """The k8s.io/kubernetes module in the Go module cache, or None."""
    root = os.environ.get("GOMODCACHE") or str(
        Path(os.environ.get("GOPATH", str(Path.home() / "go"))) / "pkg/mod"
    )
    d = Path(root) / f"k8s.io/kubernetes@{version}"
    return d if (d / PACKAGE / "helpers_test.go").is_file() else None


def _load(path: Path) -> list[FlowGroup]:
    groups = []
    for line in path.read_text().splitlines():
        d: dict[str, Any] = json.loads(line)
        flows = tuple(
            Flow(
                d["test"],
                f["Name"],
                f["Src"],
                (f["Proto"] or "TCP").lower(),
                f["Dst"],
                f["Port"],
                f["Output"],
                f["Masq"],
            )
            for f in d["flows"]
        )
        groups.append(FlowGroup(d["test"], d["line"], d["dump"], tuple(d["node_ips"]), flows, d["kind"]))
    return groups


def upstream_flows(version: str = VERSION, *, timeout: float = 3600) -> list[FlowGroup]:
    """Every ``runPacketFlowTests`` call of kube-proxy's nftables tests: its ruleset and flow cases.

    Raises FileNotFoundError when the module cache or the go command is missing (the caller skips),
    RuntimeError when ``go test`` fails (with the tail of its output)."""
    src = module_dir(version)
    go = shutil.which("go") or (shutil.which("go", path="/usr/local/go/bin"))
    if src is None:
        raise FileNotFoundError(f"k8s.io/kubernetes@{version} is not in the Go module cache")
    cached = cache_dir() / "test-data" / f"kube-proxy-nftables-flows-{version}-{_FORMAT}.jsonl"
    if cached.is_file():
        return _load(cached)
    if go is None:
        raise FileNotFoundError("the go command is not installed")
    work = cache_dir() / "test-data" / f"kube-proxy-nftables-flows-{version}.build"
    shutil.rmtree(work, ignore_errors=True)
    pkg = work / "nftables"
    pkg.mkdir(parents=True)
    for f in (src / PACKAGE).glob("*.go"):
        text = f.read_text()
        if f.name == "helpers_test.go":
            if text.count(_ANCHOR) != 1:
                raise RuntimeError(f"{f}: runPacketFlowTests not found (kube-proxy's test helpers changed)")
            text = text.replace(_ANCHOR, _ANCHOR + "\tk8sstateRecord(t, line, nft, nodeIPs, testCases)\n")
            if text.count(_STATE_ANCHOR) != 1:
                raise RuntimeError(
                    f"{f}: assertNFTablesTransactionEqual not found (kube-proxy's helpers changed)"
                )
            text = text.replace(_STATE_ANCHOR, _STATE_ANCHOR + "\tk8sstateRecordState(t, line, expected)\n")
        (pkg / f.name).write_text(text)
    (pkg / "zz_k8sstate_record_test.go").write_text(_RECORDER)
    (work / "go.mod").write_text(kubernetes_wrapper_gomod((src / "go.mod").read_text(), version))
    out = work / "flows.jsonl"
    env = {**os.environ, "GOWORK": "off", "GOFLAGS": "-mod=mod", "K8SSTATE_FLOW_OUT": str(out)}
    log = work / "go.log"
    with log.open("wb") as lf:
        for argv in ([go, "mod", "tidy"], [go, "test", "-count=1", "-run", "Test", "./nftables/"]):
            rc = subprocess.run(  # noqa: S603 - argv of our own: the go command and fixed arguments
                argv, cwd=work, env=env, stdout=lf, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
            if rc != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(argv[1:3])} in {work} failed (exit {rc}):\n{tail}")
    atomic_write_text(cached, out.read_text())
    shutil.rmtree(work, ignore_errors=True)
    return _load(cached)


_ORDER = {"table": 0, "chain": 1, "set": 1, "map": 1, "counter": 1, "flowtable": 1, "rule": 2, "element": 3}


def nft_script(dump: str) -> str:
    """``nft -f`` input for a dump: declarations, then rules, then elements (a test's expected text is
    grouped per Service, so a rule may name a chain or set declared further down — the fake accepts
    that, the kernel does not). Comment lines are dropped; the order within each kind is kept."""
    lines = [ln.strip() for ln in dump.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return "\n".join(sorted(lines, key=lambda ln: _ORDER.get(ln.split(" ", 2)[1], 4))) + "\n"
