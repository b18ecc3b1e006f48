"""Descriptor generation: the .proto parser, the Go tag scanner, the sources (module cache, module proxy)."""

from __future__ import annotations

import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_k8sstate.errors import BinaryError, ParseError
from pytest_k8sstate.etcd.decode.protofetch import API_MODULES, gomodcache, module_files, proxy_list
from pytest_k8sstate.etcd.decode.protoparse import group_name, parse_proto, scan_go_tags
from pytest_k8sstate.etcd.decode.protoschema import build_schema, default_version

PROTO = """
// A file comment
syntax = "proto2";

package k8s.io.example.v1;

import "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto";
option go_package = "k8s.io/example/v1";

// Widget is a thing.
message Widget {
  optional .k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta metadata = 1;
  optional WidgetSpec spec = 2 [deprecated = true];
  map<string, string> labels = 3;
  repeated Part parts = 4;
  /* block
     comment */
  message Part {
    required int64 size = 1;
  }
  enum Color { RED = 0; BLUE = 1; }
  optional Color color = 5;
  reserved 6, 7;
  oneof choice {
    string a = 8;
    int32 b = 9;
  }
}

// +protobuf.nullable=true
message Items {
  repeated string items = 1;
}

message WidgetSpec {
  optional Widget.Part main = 1;
}
"""


def test_parse_proto() -> None:
    pf = parse_proto(PROTO, "example.proto")
    assert pf.package == "k8s.io.example.v1"
    assert pf.imports == ["k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto"]
    w = pf.messages["k8s.io.example.v1.Widget"]
    got = [(x.name, x.number, x.type, x.repeated, x.map_key) for x in w.fields]
    assert got == [
        ("metadata", 1, ".k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", False, None),
        ("spec", 2, "WidgetSpec", False, None),
        ("labels", 3, "string", True, "string"),
        ("parts", 4, "Part", True, None),
        ("color", 5, "Color", False, None),
        ("a", 8, "string", False, None),
        ("b", 9, "int32", False, None),
    ]
    assert pf.messages["k8s.io.example.v1.Widget.Part"].fields[0].name == "size"
    assert pf.enums["k8s.io.example.v1.Widget.Color"] == {0: "RED", 1: "BLUE"}
    assert pf.messages["k8s.io.example.v1.Items"].slice_type
    assert not w.slice_type


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("syntax = 'proto2';\nmessage A {\n  optional string x = ;\n}\n", 3, "a number"),
        ("message A {\n  optional string x = 1\n}\n", 3, "';'"),
        ("message A {\n  optional string x = 1;\n", 3, "closing message A"),
        ("package a;\nservice S {}\n", 2, "syntax, package"),
        ("message A {\n  optional string x = 0;\n}\n", 2, "field number"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_proto(text, "bad.proto")
    assert exc.value.source == "bad.proto"
    assert exc.value.line == line
    assert needle in str(exc.value)


GO = """
package v1

// Widget is a thing.
type Widget struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`
	Replicas *int32 `json:"replicas,omitempty" protobuf:"varint,2,opt,name=replicas"`
	Port int32 `json:"port" protobuf:"varint,3,opt,name=port"`
	Ref string `json:"$ref,omitempty" protobuf:"bytes,4,opt,name=ref"`
	Source `json:"" protobuf:"bytes,5,opt,name=source"`
	Created Time `json:"created,omitempty,omitzero" protobuf:"bytes,6,opt,name=created"`
	// Old string `json:"old" protobuf:"bytes,7,opt,name=old"`
	Hidden string `json:"-" protobuf:"bytes,8,opt,name=hidden"`
}

const GroupName = "example.k8s.io"
"""


def test_scan_go_tags() -> None:
    tags = scan_go_tags(GO)["Widget"]
    assert sorted(tags) == [1, 2, 3, 4, 5, 6]
    assert (tags[1].json_name, tags[1].omitempty, tags[1].pointer, tags[1].inline) == (
        "metadata",
        True,
        False,
        False,
    )
    assert (tags[2].pointer, tags[2].omitempty) == (True, True)
    assert (tags[3].json_name, tags[3].omitempty) == ("port", False)
    assert tags[4].json_name == "$ref"
    assert tags[5].inline
    assert tags[6].omitzero
    assert group_name(GO) == "example.k8s.io"
    assert group_name("// +groupName=\npackage v1\n") == ""
    assert group_name("package v1\n") is None


def test_proxy_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_list({}) == ["https://proxy.golang.org"]
    assert proxy_list({"GOPROXY": "https://a.example/,direct"}) == ["https://a.example"]
    assert proxy_list({"GOPROXY": "http://b|https://c,off,https://d"}) == ["http://b", "https://c"]
    assert proxy_list({"GOPROXY": "off"}) == []
    assert gomodcache({"GOMODCACHE": "/x/mod"}) == Path("/x/mod")
    assert gomodcache({"GOPATH": "/g1:/g2"}) == Path("/g1/pkg/mod")


def _module_zip(module: str, version: str) -> bytes:
    """A module zip (proxy layout) of the needed files of the module cache's copy, made at test time."""
    root = gomodcache() / f"{module}@{version}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in root.rglob("*"):
            if p.suffix in (".proto", ".go") and p.is_file() and not p.name.endswith(".pb.go"):
                z.writestr(f"{module}@{version}/{p.relative_to(root).as_posix()}", p.read_bytes())
        z.writestr(f"{module}@{version}/go.mod", f"module {module}\n")
    return buf.getvalue()


@pytest.fixture
def proxy() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """A module proxy on loopback serving the zips put in its dict; the paths asked for are recorded."""
    zips: dict[str, bytes] = {}
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = zips.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", zips, asked
    finally:
        server.shutdown()
        server.server_close()


def test_descriptors_from_the_module_proxy_without_a_module_cache(
    proxy: tuple[str, dict[str, bytes], list[str]], tmp_path: Path
) -> None:
    """A user with no Go toolchain and no module cache: the module zips come over HTTP from $GOPROXY."""
    version = default_version()
    if not (gomodcache() / f"k8s.io/api@{version}").is_dir():
        pytest.skip(f"k8s.io/api@{version} not in the module cache to serve from")
    url, zips, asked = proxy
    for module in API_MODULES:
        zips[f"/{module}/@v/{version}.zip"] = _module_zip(module, version)
    env = {
        "GOMODCACHE": str(tmp_path / "empty"),
        "K8SSTATE_CACHE_DIR": str(tmp_path / "cache"),
        "GOPROXY": f"{url}/missing,{url},direct",
    }
    doc = build_schema(version, env)
    assert all(src.startswith(url + "/k8s.io/") for src in doc["sources"].values()), doc["sources"]
    assert f"/missing/k8s.io/api/@v/{version}.zip" in asked  # the first proxy answered 404: the next one
    assert doc == {**build_schema(version), "sources": doc["sources"]}  # the same as from the module cache
    assert doc["groups"]["apps/v1"] == "k8s.io.api.apps.v1"
    # the zips are kept: a second run needs no network
    zips.clear()
    files, origin = module_files("k8s.io/api", version, env)
    assert origin.startswith(str(tmp_path / "cache"))
    assert "core/v1/generated.proto" in files


def test_no_source_is_one_clear_error(tmp_path: Path, proxy: tuple[str, dict[str, bytes], list[str]]) -> None:
    url, _, _ = proxy
    env = {"GOMODCACHE": str(tmp_path / "m"), "K8SSTATE_CACHE_DIR": str(tmp_path / "c"), "GOPROXY": url}
    with pytest.raises(BinaryError) as exc:
        module_files("k8s.io/api", "v0.99.0", env)
    msg = str(exc.value)
    assert "k8s.io/api v0.99.0" in msg
    assert "HTTP 404" in msg
    assert "GOPROXY" in msg
    env["GOPROXY"] = "off"
    with pytest.raises(BinaryError) as exc:
        module_files("k8s.io/api", "v0.99.0", env)
    assert str(tmp_path / "m") in str(exc.value)


def test_a_broken_zip_names_itself(tmp_path: Path, proxy: tuple[str, dict[str, bytes], list[str]]) -> None:
    url, zips, _ = proxy
    zips["/k8s.io/api/@v/v0.1.0.zip"] = b"not a zip"
    env = {"GOMODCACHE": str(tmp_path / "m"), "K8SSTATE_CACHE_DIR": str(tmp_path / "c"), "GOPROXY": url}
    with pytest.raises(BinaryError) as exc:
        module_files("k8s.io/api", "v0.1.0", env)
    assert "not a readable module zip" in str(exc.value)


def test_without_any_source_values_still_decode_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_k8sstate.etcd.decode import decode_value
    from pytest_k8sstate.etcd.decode.protobuf import active_schema, schema_problem

    try:
        from etcd_fixtures import k8s_value, pod
    except ImportError:  # tests/ is a package
        from tests.etcd_fixtures import k8s_value, pod

    monkeypatch.setenv("K8SSTATE_KUBERNETES_VERSION", "1.30.98")  # in no module cache
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "m"))
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("GOPROXY", "off")
    with pytest.warns(RuntimeWarning, match=r"k8s\.io/apimachinery v0\.30\.98.*GOPROXY"):
        assert active_schema() is None
    problem = schema_problem()
    assert problem is not None
    assert "v0.30.98" in problem
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not once per value
        d = decode_value("/registry/pods/ns/p", k8s_value("v1", "Pod", pod("ns", "p", uid="u")))
    assert d.error is None
    assert d.fields is not None
    assert d.fields["spec"]["nodeName"] == "node-1"  # the generic decoder with its small schema
    assert "apiVersion" not in d.fields


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"format": 2}', "[]", '{"format": 2, "version": "v0.37.1", "groups": [], "messages": {}}'],
)
def test_a_damaged_cache_file_is_regenerated(tmp_path: Path, content: str) -> None:
    from pytest_k8sstate.etcd.decode.protoschema import load_schema, schema_path

    version = default_version()
    if not (gomodcache() / f"k8s.io/api@{version}").is_dir():
        pytest.skip(f"k8s.io/api@{version} not in the module cache")
    env = {"K8SSTATE_CACHE_DIR": str(tmp_path), "GOPROXY": "off"}
    path = schema_path(version, env)
    path.parent.mkdir(parents=True)
    path.write_text(content.replace('"format": 2', f'"format": {2}'))
    doc = load_schema(version, env)
    assert doc["groups"]["apps/v1"] == "k8s.io.api.apps.v1"
    assert json.loads(path.read_text())["version"] == version  # rewritten
