"""``k8sstate diff|show|trace`` on snapshot files, through the CLI entry point: filters, ``--exit-code``,
``--limit`` vs ``--all``, ``show --key/--chain``, ``trace --snapshot --service``, ``--version``, a bare
``k8sstate``, and every example the help texts print."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from diff_fixtures import K_DEPLOY, snapshots, write_snapshots

from pytest_k8sstate.cli import state as cli_state
from pytest_k8sstate.cli import trace as cli_trace
from pytest_k8sstate.cli.main import EXAMPLES, build_parser, main, version
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.nft import parse_nft_json
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables

ROOT = Path(__file__).resolve().parent.parent
NFT_137 = Path(__file__).parent / "data" / "kube-proxy-1.37-nftables.nft"

SCALED = "  service default/web:http: endpoints 3 → 2, removed 10.244.1.4:8080 (iptables, 8 changes)"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def snaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """before.json / after.json in the working directory (the help examples use those names)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    b, a = write_snapshots(tmp_path)
    return b.relative_to(tmp_path), a.relative_to(tmp_path)


# --------------------------------------------------------------------------------------------------
# diff


def test_diff_shows_values_and_per_service_summary(
    snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "diff", "before.json", "after.json")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "diff before → after (etcd revision 10 → 30)",
        "etcd: 1 added, 1 removed, 2 modified "
        "(1 modified hidden by ignore patterns; show with --all / full=True)",
        "  + /registry/services/specs/other/api  [Service]",
        "  - /registry/configmaps/kube-system/gone  [ConfigMap]",
        "  ~ /registry/configmaps/default/big  [ConfigMap]  data.config",
        '      data.config: "…ine 1000: value 1000\\nline 1001: valu…" (line 1001) → '
        '"…ine 1000: value CHANGED\\nline 1001: valu…"',
        "  ~ /registry/deployments/default/web  [Deployment]  metadata.generation, spec.replicas",
        "      metadata.generation: 2 → 3",
        "      spec.replicas: 2 → 3",
        "node kind-worker:",
        SCALED,
    ]
    assert "\033[" not in out  # not a terminal: no colour


def test_diff_exit_code(snaps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "diff", "before.json", "after.json")[0] == 0  # without --exit-code: 0
    assert run(capsys, "diff", "before.json", "after.json", "--exit-code")[0] == 1
    same = dataclasses.replace(snapshots()[0], label="again").save(tmp_path / "again.json")
    rc, out, _ = run(capsys, "diff", "before.json", str(same), "--exit-code")
    assert rc == 0
    assert out.splitlines()[-1] == "no changes"
    # filtered to nothing: no differences in that view
    assert run(capsys, "diff", "before.json", "after.json", "--exit-code", "--namespace", "nope")[0] == 0
    # a change only the ignore patterns hide counts with --all
    _, a = snapshots()
    lease_only = dataclasses.replace(a, nodes=snapshots()[0].nodes)
    eb = snapshots()[0].etcd
    assert eb is not None
    lease_only.etcd = dataclasses.replace(
        eb,
        entries={
            **eb.entries,
            **{k: v for k, v in (a.etcd.entries if a.etcd else {}).items() if "leases" in k},
        },
    )
    p = lease_only.save(tmp_path / "lease.json")
    assert run(capsys, "diff", "before.json", str(p), "--exit-code")[0] == 0
    assert run(capsys, "diff", "before.json", str(p), "--exit-code", "--all")[0] == 1
    assert run(capsys, "diff", "before.json", str(p), "--exit-code", "--json")[0] == 0


def test_diff_filters(snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    def lines(*extra: str) -> list[str]:
        rc, out, err = run(capsys, "diff", "before.json", "after.json", *extra)
        assert (rc, err) == (0, "")
        return out.splitlines()

    ns_default = lines("--namespace", "default")
    assert (
        "  ~ /registry/deployments/default/web  [Deployment]  metadata.generation, spec.replicas"
        in ns_default
    )
    assert not any("other/api" in ln or "kube-system" in ln for ln in ns_default)
    assert SCALED in ns_default  # the Service in default stays
    ns_other = lines("-n", "other")
    assert "  + /registry/services/specs/other/api  [Service]" in ns_other
    assert not any(ln.startswith("  service ") for ln in ns_other)  # kube-proxy changes were in default
    for kind in ("Deployment", "deployment", "deployments"):
        got = [ln for ln in lines("--kind", kind) if ln.startswith("  ~ ") or ln.startswith("  + ")]
        assert got == [
            "  ~ /registry/deployments/default/web  [Deployment]  metadata.generation, spec.replicas"
        ]
    both = lines("--kind", "Service,ConfigMap", "--etcd-only")
    assert both[1] == "etcd: 1 added, 1 removed, 1 modified"
    assert "node kind-worker:" not in both
    keyed = lines("--key", "configmaps/**")
    assert keyed[1] == "etcd: 0 added, 1 removed, 1 modified"
    nodes_only = lines("--nodes-only")
    assert nodes_only[1] == "etcd: not compared (not captured, or left out of this view)"
    assert nodes_only[-1] == SCALED
    assert "node kind-worker:" not in lines("--node", "other-node")
    assert SCALED in lines("--node", "kind-*")
    doc = json.loads(run(capsys, "diff", "before.json", "after.json", "--json", "-n", "default")[1])
    assert doc["etcd"]["modified"] == ["/registry/configmaps/default/big", K_DEPLOY]
    assert {"path": "spec.replicas", "before": 2, "after": 3} in doc["etcd"]["details"][K_DEPLOY]["values"]
    assert doc["nodes"]["kind-worker"]["services"][0]["endpoints_after"] == [
        "10.244.1.2:8080",
        "10.244.1.3:8080",
    ]
    rc, _, err = run(capsys, "diff", "before.json", "after.json", "--etcd-only", "--nodes-only")
    assert rc == 2
    assert "not allowed with argument" in err


def test_diff_limit_is_separate_from_all(
    snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(capsys, "diff", "before.json", "after.json", "--limit", "1")[1].splitlines()
    assert "  ... and 1 more" in out  # 2 modified keys, one shown
    assert not any("leases" in ln for ln in out)
    out = run(capsys, "diff", "before.json", "after.json", "--all", "--limit", "1")[1].splitlines()
    assert "  ... and 2 more" in out  # --all unhides the lease but keeps the limit
    out = run(capsys, "diff", "before.json", "after.json", "--all", "--limit", "0")[1]
    assert "~ /registry/leases/kube-node-lease/kind-worker  [Lease]  spec.renewTime" in out
    assert '      spec.renewTime: "t1" → "t2"' in out.splitlines()
    assert "... and" not in out
    rc, _, err = run(capsys, "diff", "before.json", "after.json", "--limit", "-3")
    assert rc == 2
    assert "expected a number of lines" in err


def test_diff_rules_and_color(snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "diff", "before.json", "after.json", "--rules", "--nodes-only")[1].splitlines()
    assert out[3] == SCALED
    assert "  - chain nat KUBE-SEP-" in "\n".join(out)
    assert any(ln.startswith("  - rule nat -A KUBE-SVC-") for ln in out)
    out = run(capsys, "diff", "before.json", "after.json", "--color", "always")[1]
    assert "\033[32m  + /registry/services/specs/other/api  [Service]\033[0m" in out
    assert f"\033[36m{SCALED}\033[0m" in out


# --------------------------------------------------------------------------------------------------
# show


def test_show_key_prints_one_decoded_object(
    snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "show", "after.json", "--key", "deployments/default/web")
    assert (rc, err) == (0, "")
    obj = json.loads(out)
    assert obj["kind"] == "Deployment"
    assert obj["spec"]["replicas"] == 3
    assert json.loads(run(capsys, "show", "after.json", "--key", K_DEPLOY)[1]) == obj
    rc, out, err = run(capsys, "show", "after.json", "--key", "deployments/default/wbe")
    assert (rc, out) == (2, "")
    assert err.startswith(
        "k8sstate: error: --key deployments/default/wbe: no such key in the snapshot; "
        "did you mean /registry/deployments/default/web"
    )


def test_show_filters_list_keys(snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "show", "after.json", "--namespace", "default", "--kind", "ConfigMap,Deployment")
    assert rc == 0
    lines = out.splitlines()
    assert "etcd: revision 30, 2 keys" in lines
    assert lines[-3:] == [
        "keys:",
        "  /registry/configmaps/default/big  [ConfigMap]",
        "  /registry/deployments/default/web  [Deployment]",
    ]
    out = run(capsys, "show", "after.json", "--key", "services/**", "--etcd-only")[1]
    assert out.splitlines()[-1] == "  /registry/services/specs/other/api  [Service]"
    assert "node kind-worker" not in out
    out = run(capsys, "show", "after.json", "--kind", "Pod")[1]
    assert out.splitlines()[-1] == "no etcd key matches the filters"
    out = run(capsys, "show", "after.json", "--nodes-only")[1]
    assert "etcd: not captured" in out
    assert "iptables nat" in out


def test_show_chain(snaps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "show", "after.json", "--chain", "nat/KUBE-SERVICES", "--node", "kind-worker")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["# node kind-worker, iptables table nat", ":KUBE-SERVICES -"]
    assert (
        '-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "default/web:http cluster IP" '
        "-m tcp --dport 80 -j KUBE-SVC-" in out
    )
    # the chain as printed is what iptables-save printed for it
    expected = [ln for ln in kube_proxy_iptables_after().splitlines() if ln.startswith("-A KUBE-SERVICES ")]
    assert lines[2:] == expected
    assert run(capsys, "show", "after.json", "--chain", "nat/KUBE-SERVICES")[0] == 0  # one node: implied
    rc, _, err = run(capsys, "show", "after.json", "--chain", "nat/NOPE")
    assert rc == 2
    assert "no chain 'NOPE' in iptables table nat of node kind-worker" in err
    rc, _, err = run(capsys, "show", "after.json", "--chain", "KUBE-SERVICES")
    assert rc == 2
    assert "expected TABLE/CHAIN" in err
    rc, _, err = run(capsys, "show", "after.json", "--chain", "nat/KUBE-SERVICES", "--node", "nope")
    assert rc == 2
    assert "--node nope: not one node of the snapshot; it has kind-worker" in err
    _, a = snapshots()
    two = dataclasses.replace(a, nodes={**a.nodes, "kind-worker2": a.nodes["kind-worker"]}).save(
        tmp_path / "2.json"
    )
    rc, _, err = run(capsys, "show", str(two), "--chain", "nat/KUBE-SERVICES")
    assert rc == 2
    assert "pick one with --node NAME (kind-worker, kind-worker2)" in err


def kube_proxy_iptables_after() -> str:
    from diff_fixtures import WEB_ENDPOINTS, web_services

    return kube_proxy_iptables(web_services(WEB_ENDPOINTS[:2]))


@pytest.fixture
def with_nft_node(snaps: tuple[Path, Path], tmp_path: Path) -> Path:
    """after.json plus a node ``node-1`` with a real kube-proxy 1.37's nft ruleset (loaded into a netns)."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    with netns.temporary("cds") as ns:
        ns.run(["nft", "-f", "-"], input=NFT_137.read_bytes(), timeout=60)
        nft = parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text)
    after = Snapshot.load(tmp_path / "after.json")
    after.nodes["node-1"] = NodeState("node-1", nft=nft)
    return after.save(tmp_path / "after.json")


def test_show_nft_chain_and_trace_nft_service(
    with_nft_node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "show", "after.json", "--chain", "kube-proxy/services", "--node", "node-1")
    assert (rc, err) == (0, "")
    assert out.splitlines()[:2] == ["# node node-1, nft table ip kube-proxy", "chain services {"]
    assert "\tip daddr . meta l4proto . th dport vmap @service-ips" in out.splitlines()
    chain = "service-SUSTUHLJ-default/web/tcp/http"
    rc, out, _ = run(capsys, "show", "after.json", "--chain", f"ip:kube-proxy/{chain}", "--node", "node-1")
    assert rc == 0
    assert "numgen random mod 3" in out
    rc, out, _ = run(
        capsys, "trace", "--snapshot", "after.json", "--node", "node-1", "--service", "default/web"
    )
    assert rc == 0
    assert (
        out.splitlines()[0] == "packet tcp 203.0.113.10:40000 → 10.108.197.216:80, starts in nat PREROUTING"
    )
    assert {ln.split()[2] for ln in out.splitlines()[2:]} == {
        "10.244.1.2:8080",
        "10.244.1.3:8080",
        "10.244.1.4:8080",
    }


# --------------------------------------------------------------------------------------------------
# trace


def test_trace_snapshot_by_service_name(snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(
        capsys, "trace", "--snapshot", "after.json", "--node", "kind-worker", "--service", "default/web:http"
    )
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "packet tcp 203.0.113.10:40000 → 10.96.0.20:80, starts in nat PREROUTING",
        "PROBABILITY  DNAT             MASQUERADE  VERDICT",
        "0.5 (1/2)    10.244.1.2:8080  yes         ACCEPT",
        "0.5 (1/2)    10.244.1.3:8080  yes         ACCEPT",
    ]
    # by port number, the only port implied, and by --dst: the same outcomes
    same = run(capsys, "trace", "--snapshot", "after.json", "--service", "default/web:80")[1]
    assert same == out
    assert run(capsys, "trace", "--snapshot", "after.json", "--service", "default/web")[1] == out
    assert run(capsys, "trace", "--snapshot", "after.json", "--dst", "10.96.0.20:80")[1] == out
    before = run(capsys, "trace", "--snapshot", "before.json", "--service", "default/web", "--json")[1]
    assert sorted(o["dnat"] for o in json.loads(before)["outcomes"]) == [
        "10.244.1.2:8080",
        "10.244.1.3:8080",
        "10.244.1.4:8080",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--snapshot", "after.json", "--service", "default/nope"], "did you mean default/web?"),
        (["--snapshot", "after.json"], "exactly one of --dst IP:PORT or --service"),
        (
            ["--snapshot", "after.json", "--dst", "10.96.0.20:80", "--service", "default/web"],
            "exactly one of",
        ),
        (["--iptables-save", "x.txt", "--service", "default/web"], "trace --service needs --snapshot FILE"),
        (["--snapshot", "after.json", "--node", "n9", "--service", "default/web"], "--node n9: not one node"),
        (["--snapshot", "after.json", "--service", "web"], "expected 'namespace/name'"),
        (["--snapshot", "after.json", "--service", "default/web", "--proto", "udp"], "has no udp port"),
        (["--snapshot", "missing.json", "--dst", "10.96.0.20:80"], "missing.json"),
    ],
)
def test_trace_snapshot_errors_are_one_line(
    snaps: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, out, err = run(capsys, "trace", *argv)
    assert (rc, out) == (2, "")
    assert err.startswith("k8sstate: error: ")
    assert err.count("\n") == 1
    assert message in err


# --------------------------------------------------------------------------------------------------
# top level, snapshot, cluster list


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "pytest_k8sstate.cli", *argv],
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )


def test_bare_invocation_prints_help_and_version() -> None:
    proc = _cli()
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("usage: k8sstate [-h] [--version] COMMAND ...")
    assert EXAMPLES.splitlines()[1] in proc.stdout
    v = _cli("--version")
    assert (v.returncode, v.stdout) == (0, f"k8sstate {version()}\n")
    from importlib.metadata import version as dist_version

    import pytest_k8sstate

    assert version() in (pytest_k8sstate.__version__, dist_version("pytest-k8sstate"))


def test_a_command_group_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "cluster")
    assert (rc, err) == (0, "")
    assert out.startswith("usage: k8sstate cluster [-h] {create,delete,list} ...")
    rc, out, _ = run(capsys, "node")
    assert rc == 0
    assert "exec" in out


def test_every_command_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (
        ["trace"],
        ["diff"],
        ["show"],
        ["snapshot"],
        ["cluster", "list"],
        ["cluster", "create"],
        ["node", "exec"],
    ):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([*cmd, "--help"])
        assert exc.value.code == 0
        assert "examples:\n  k8sstate " in capsys.readouterr().out, cmd


def _examples(text: str, prefix: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        line = line.strip().split("  #", 1)[0]
        if line.startswith(prefix) and "|" not in line and ">" not in line and "\\" not in line:
            out.append(shlex.split(line)[1:])
    return out


def test_help_examples_of_diff_show_and_trace_run(
    snaps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dump.txt").write_text(kube_proxy_iptables_after())
    ran = 0
    for text, prefix in (
        (cli_state.DIFF_EXAMPLES, "k8sstate diff"),
        (cli_trace.EXAMPLES, "k8sstate trace"),
        (cli_state.SHOW_EXAMPLES, "k8sstate show"),
    ):
        for argv in _examples(text, prefix):
            if "node-1" in argv:  # the nft node: test_show_nft_chain_and_trace_nft_service
                continue
            rc, out, err = run(capsys, *argv)
            assert (rc, err) == (0, ""), argv
            assert out, argv
            ran += 1
    assert ran >= 10
    # the one with --exit-code in a shell line
    assert run(capsys, "diff", "before.json", "after.json", "--exit-code")[0] == 1


def test_snapshot_missing_netns_is_one_error_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    proc = _cli("snapshot", "-o", str(out), "--netns", "does-not-exist")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "k8sstate: error: --netns does-not-exist: no such network namespace (not in /run/netns); "
        "`ip netns list` shows them\n"
    )
    assert not out.exists()


def test_cluster_list_empty_says_so_and_reaps_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_k8sstate.providers.local import reaper

    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []
    monkeypatch.setattr(reaper, "reap", lambda **_: calls.append("reap") or ["old"])
    rc, out, err = run(capsys, "cluster", "list", "--provider", "local")
    assert (rc, out, err) == (0, "no clusters (local)\n", "")
    assert calls == []
    rc, out, err = run(capsys, "cluster", "list", "--provider", "local", "--reap")
    assert (rc, out) == (0, "no clusters (local)\n")
    assert calls == ["reap"]
    assert err == "reaped 'old' (local): its test session is gone\n"
