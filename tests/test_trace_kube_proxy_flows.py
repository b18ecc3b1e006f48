"""The iptables tracer against kube-proxy's own packet-flow expectations (``pkg/proxy/iptables``).

At test time, kube-proxy's iptables proxier unit tests (``k8s.io/kubernetes`` in the Go module
cache, the version this project builds) are copied into a temporary wrapper module and run with
``go test``, with one change: ``runPacketFlowTests`` first calls a helper written here, which
appends the rules the real proxier wrote (its fake iptables' ``iptables-save``), the node IPs and
every flow case (source, destination, port, expected output and masquerade) to a JSON-lines file.
Each flow is then traced through that dump with our tracer. Nothing upstream is committed or
modified: the copy lives in a temporary directory (a warm Go build cache makes this ~1 minute).
Skipped (with the reason) when Go or the module cache is missing.

Upstream's expectations read: ``output`` is the comma-separated DNAT destinations, or ``DROP`` /
``REJECT`` / ``ACCEPT`` (a filter verdict), or ``""`` (nothing happened); ``masq`` whether the
packet was marked for masquerade.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.binaries.gomod import kubernetes_wrapper_gomod
from pytest_k8sstate.binaries.versions import DEFAULT_KUBERNETES_VERSION as KUBERNETES_VERSION
from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.parse.iptables import IptablesRuleset, parse_iptables_save
from pytest_k8sstate.trace import Packet, TraceResult, format_hostport
from pytest_k8sstate.trace.iptables import trace_iptables

MODCACHE = Path(os.environ.get("GOMODCACHE") or Path.home() / "go" / "pkg" / "mod")
KUBE = MODCACHE / f"k8s.io/kubernetes@{KUBERNETES_VERSION}"
TEST_FILE = KUBE / "pkg/proxy/iptables/proxier_test.go"
GOMOD = MODCACHE / f"cache/download/k8s.io/kubernetes/@v/{KUBERNETES_VERSION}.mod"
HOOK = (
    "func runPacketFlowTests(t *testing.T, line int, ipt *iptablestest.FakeIPTables, nodeIPs []string, "
    "testCases []packetFlowTest) {"
)

# Our helper, compiled into the copied test package.
HELPER_GO = """package iptables

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	iptablestest "k8s.io/kubernetes/pkg/util/iptables/testing"
)

func k8ssDumpFlows(t *testing.T, line int, ipt *iptablestest.FakeIPTables, nodeIPs []string,
	cases []packetFlowTest) {
	path := os.Getenv("K8SSTATE_FLOW_DUMP")
	if path == "" {
		return
	}
	var buf bytes.Buffer
	if err := ipt.SaveInto("", &buf); err != nil {
		t.Fatalf("k8sstate: dump: %v", err)
	}
	flows := []map[string]any{}
	for _, tc := range cases {
		proto := strings.ToLower(string(tc.protocol))
		if proto == "" {
			proto = "tcp"
		}
		flows = append(flows, map[string]any{"name": tc.name, "src": tc.sourceIP, "proto": proto,
			"dst": tc.destIP, "port": tc.destPort, "output": tc.output, "masq": tc.masq})
	}
	rec := map[string]any{"test": t.Name(), "line": line, "node_ips": nodeIPs, "dump": buf.String(),
		"flows": flows}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatalf("k8sstate: %v", err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(rec); err != nil {
		t.Fatalf("k8sstate: %v", err)
	}
}
"""


def _skip_reason() -> str | None:
    if shutil.which("go") is None:
        return "needs the go command (kube-proxy's unit tests produce the rule dumps)"
    for p in (TEST_FILE, GOMOD):
        if not p.is_file():
            return f"{p} not in the Go module cache (k8sstate binaries install downloads it)"
    return None


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(  # noqa: S603 - argv is ours: go with fixed arguments
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


@pytest.fixture(scope="module")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("kube-proxy-flows")
    src = TEST_FILE.read_text()
    assert HOOK in src, f"runPacketFlowTests changed its signature in {TEST_FILE}; update HOOK"
    mod = work / "mod"
    pkg = mod / "proxyiptables"  # a copy of the package inside our wrapper module (the cache is read-only)
    pkg.mkdir(parents=True)
    for f in TEST_FILE.parent.glob("*.go"):
        (pkg / f.name).write_text(f.read_text())
    (pkg / TEST_FILE.name).write_text(
        src.replace(HOOK, HOOK + "\n\tk8ssDumpFlows(t, line, ipt, nodeIPs, testCases)")
    )
    (pkg / "k8ss_flows_test.go").write_text(HELPER_GO)
    (mod / "go.mod").write_text(kubernetes_wrapper_gomod(GOMOD.read_text(), KUBERNETES_VERSION))
    env = {**os.environ, "GOPROXY": "off", "GOSUMDB": "off", "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    _run(["go", "mod", "tidy"], mod, env, 300)
    tests = sorted(set(re.findall(r"^func (Test\w+)\(t \*testing\.T\) \{", src, re.M)))
    with_flows = [
        name
        for name in tests
        if "runPacketFlowTests(" in src[src.index(f"func {name}(") :].split("\nfunc ", 1)[0]
    ]
    assert with_flows, "no test calls runPacketFlowTests"
    out = work / "flows.jsonl"
    env["K8SSTATE_FLOW_DUMP"] = str(out)
    pattern = "^(" + "|".join(with_flows) + ")$"
    _run(["go", "test", "-count=1", "-run", pattern, "./proxyiptables"], mod, env, 1800)
    return [json.loads(line) for line in out.read_text().splitlines()]


_UNQUOTED_COMMENT = re.compile(r'--comment ((?:[^\s"-]\S*)(?: [^\s-]\S*)+)')


def _ruleset(dump: str, where: str, requoted: list[str]) -> IptablesRuleset:
    """Parse strictly. The fake iptables prints the comments of rules kube-proxy adds with
    ``EnsureRule`` (argv, not restore text) unquoted — ``--comment kubernetes service portals`` —
    which the real iptables-save never prints and the real iptables-restore rejects; our parser
    rejects them too (checked here: a stray token after ``--comment``), and they are quoted then."""
    try:
        rs = parse_iptables_save(dump, source=where)
        rs.validate()
        return rs
    except ParseError as exc:
        if "stray token" not in str(exc) or "--comment" not in str(exc) or not _UNQUOTED_COMMENT.search(dump):
            raise
    requoted.append(where)
    rs = parse_iptables_save(_UNQUOTED_COMMENT.sub(r'--comment "\1"', dump), source=where)
    rs.validate()
    return rs


def _observed(res: TraceResult) -> tuple[str, bool]:
    """Our result in upstream's terms: DNAT destinations / filter verdict / "", and masquerade."""
    dests = sorted({o.dnat for o in res.outcomes if o.dnat is not None and o.verdict == "ACCEPT"})
    verdicts = {o.verdict for o in res.outcomes}
    masq = any(o.masquerade for o in res.outcomes)
    if dests:
        return ", ".join(dests), masq
    if verdicts == {"ACCEPT"}:
        return "", masq
    return ",".join(sorted(verdicts)), masq


def _flows(records: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for rec in records:
        for f in rec["flows"]:
            yield f"{rec['test']}/{f['name']} (line {rec['line']})", rec, f


@pytest.mark.slow
def test_every_kube_proxy_flow(harvested: list[dict[str, Any]]) -> None:
    failures: list[str] = []
    total = v6 = 0
    rulesets: dict[str, IptablesRuleset] = {}
    requoted: list[str] = []
    for where, rec, f in _flows(harvested):
        total += 1
        v6 += ":" in f["dst"]
        rs = rulesets.get(rec["dump"])
        if rs is None:
            rs = rulesets[rec["dump"]] = _ruleset(rec["dump"], where, requoted)
        fam = [ip for ip in rec["node_ips"] if (":" in ip) == (":" in f["dst"])]
        pkt = Packet(f["dst"], f["port"], proto=f["proto"], src=f["src"], local_ips=frozenset(fam))
        res = trace_iptables(rs, pkt)
        got = _observed(res)
        want_dests = ", ".join(sorted(x.strip() for x in f["output"].split(",") if x.strip()))
        want = (want_dests if ":" in f["output"] else f["output"], f["masq"])
        if want[0] == "ACCEPT":
            want = ("", want[1])  # an explicit filter ACCEPT: no DNAT, accepted
        if got != want:
            failures.append(
                f"{where}: {f['src']} -> {format_hostport(f['dst'], f['port'])}: want {want}, got {got}"
            )
    print(f"kube-proxy iptables flows: {total - len(failures)}/{total} pass ({v6} IPv6)")
    print(f"{len(requoted)} of {len(rulesets)} dumps had the fake's unquoted multi-word comments")
    assert total >= 50, f"only {total} flows harvested"
    assert not failures, "\n".join(failures)
