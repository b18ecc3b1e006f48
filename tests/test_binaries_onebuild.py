"""The missing Kubernetes binaries are built by one ``go build -o DIR/ PKG…``; a cache hit starts no ``go``.

The Go toolchain is replaced by ``fake_go`` (a Python script named as such, a test double: a real
Kubernetes build takes 10+ minutes here — ``bench/bench_binaries_build.py`` measures that). It records
every invocation and answers ``go mod download -json`` with a small k8s.io/kubernetes go.mod,
``go mod tidy`` with a go.sum, and ``go build -o DIR/ PKG…`` with one file per package. The installer,
cache, manifest and lock are the real code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import pytest_k8sstate.binaries as b
from pytest_k8sstate.binaries import gobuild
from pytest_k8sstate.errors import BinaryError

FAKE_GO = """#!{python}
# fake go (test double): records argv; mod download / mod tidy / build -o DIR/ PKG... as described above
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GO_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["mod", "download"]:
    gomod = os.path.join(os.environ["FAKE_GO_DIR"], "kubernetes.mod")
    with open(gomod, "w") as f:
        f.write("module k8s.io/kubernetes\\n\\ngo 1.25.0\\n\\n"
                "replace k8s.io/api => ./staging/src/k8s.io/api\\n")
    print(json.dumps({{"Path": "k8s.io/kubernetes", "Version": "v1.37.1", "GoMod": gomod}}))
elif args[:2] == ["mod", "tidy"]:
    open("go.sum", "w").close()
elif args[0] == "build":
    out = args[args.index("-o") + 1]
    pkgs = args[args.index("-o") + 2:]
    if os.environ.get("FAKE_GO_FAIL"):
        print("fake go: compile error in " + pkgs[-1], file=sys.stderr)
        sys.exit(1)
    for pkg in pkgs:
        dest = os.path.join(out, pkg.rsplit("/", 1)[-1]) if out.endswith("/") else out
        shutil.copy("/bin/true", dest)
else:
    sys.exit(3)
"""


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "fake-go"
    d.mkdir()
    go = d / "go"
    go.write_text(FAKE_GO.format(python=sys.executable))
    go.chmod(0o755)
    monkeypatch.setenv("K8SSTATE_GO", str(go))
    monkeypatch.setenv("FAKE_GO_DIR", str(d))
    monkeypatch.setenv("FAKE_GO_LOG", str(d / "calls.log"))
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path / "cache"))
    for comp in b.COMPONENT_BINARIES:
        monkeypatch.delenv(b.Versions.env_var(comp), raising=False)
    return go


def _calls(go: Path) -> list[list[str]]:
    log = go.parent / "calls.log"
    return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


def test_the_missing_kubernetes_binaries_are_built_by_one_go_build(fake_go: Path) -> None:
    assert gobuild.ONE_GO_BUILD
    lines: list[str] = []
    names = ["kube-proxy", "kube-scheduler", "kubectl"]
    got = b.ensure_binaries(names, progress=lines.append, download=False)
    assert got.sources == dict.fromkeys(names, "build")
    builds = [c for c in _calls(fake_go) if c[0] == "build"]
    assert len(builds) == 1, builds
    out_dir = builds[0][builds[0].index("-o") + 1]
    assert out_dir.endswith("/")
    assert builds[0][builds[0].index("-o") + 2 :] == [f"k8s.io/kubernetes/cmd/{n}" for n in names]
    assert any("-X k8s.io/component-base/version.gitVersion=v1.37.1" in a for a in builds[0])
    manifest = json.loads((got["kubectl"].parent / "manifest.json").read_text())["binaries"]
    assert manifest["kube-proxy"]["detail"].endswith("one go build of kube-proxy, kube-scheduler, kubectl)")
    assert not list(got["kubectl"].parent.glob(".tmp-*"))  # the build directory is gone
    assert lines[-1].startswith(
        "kubernetes v1.37.1: building kube-proxy, kube-scheduler, kubectl in one go build… done ("
    )

    before = len(_calls(fake_go))
    again = b.ensure_binaries(names, progress=lines.append, download=False)
    assert again.sources == dict.fromkeys(names, "cache")
    assert len(_calls(fake_go)) == before  # a cache hit starts no go process at all

    (got["kubectl"]).unlink()  # one missing: only it is built (one package, one go build)
    b.ensure_binaries(names, progress=lines.append, download=False)
    builds = [c for c in _calls(fake_go)[before:] if c[0] == "build"]
    assert [c[-1] for c in builds] == ["k8s.io/kubernetes/cmd/kubectl"]
    assert len(builds) == 1


def test_a_failed_one_go_build_installs_nothing_and_leaves_no_temp_dir(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "1")
    with pytest.raises(BinaryError, match=r"kube-proxy, kube-scheduler v1\.37\.1: `.*` exited 1") as exc:
        b.ensure_binaries(["kube-proxy", "kube-scheduler"], progress=lambda _: None, download=False)
    assert "compile error in k8s.io/kubernetes/cmd/kube-scheduler" in str(exc.value)  # the log's tail
    vdir = Path(b.cache_dir()) / "bin" / "kubernetes-v1.37.1"
    assert not list(vdir.glob(".tmp-*"))
    assert not (vdir / "kube-proxy").exists()
