"""A Secret's values never reach the pytest output or the artifacts, even when applying it fails.

One real ``local`` cluster (kept after the first inner run, reused by the second): a Secret the API
rejects (invalid key name) carrying a planted value is applied in a failing test, at default verbosity
and with ``-vv``; the whole output and every artifact file are searched for the value and its base64.
"""

from __future__ import annotations

import base64
import json
import os
import re
from importlib.metadata import entry_points
from types import SimpleNamespace
from typing import Any

import pytest

import pytest_k8sstate.binaries as binaries
import pytest_k8sstate.plugin.options as k8s_config
from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.api import api_error, patch_secret_values, scrub, secret_values
from pytest_k8sstate.k8s.helper import K8sHelper
from pytest_k8sstate.providers.local.binaries import KUBE_BINARIES
from pytest_k8sstate.util.files import cache_dir

REAL_CACHE = str(cache_dir())  # resolved before pytester points HOME at a temp dir

PLANTED = "PLANTED-SECRET-9f3c2a"
FORMS = (PLANTED, base64.b64encode(PLANTED.encode()).decode())

# the value lives in a manifest file, not in the test source (pytest prints failing source lines)
SECRET_YAML = f"""apiVersion: v1
kind: Secret
metadata:
  name: pt-bad-secret
stringData:
  "bad key!": {PLANTED}
"""

TESTS = """
from pathlib import Path


def test_apply_rejected_secret(k8s_api, cluster_state):
    k8s_api.apply(Path(__file__).parent / "secret.yaml")
"""


def test_secret_values_covers_data_and_string_data_in_both_encodings() -> None:
    encoded = base64.b64encode(b"other-value").decode()
    doc = {"kind": "Secret", "data": {"a": encoded}, "stringData": {"b": PLANTED}}
    assert set(secret_values(doc)) == {encoded, "other-value", *FORMS}
    assert secret_values({"kind": "ConfigMap", "data": {"a": PLANTED}}) == []


def test_api_error_scrubs_an_echoed_value() -> None:
    class Echo(Exception):
        status = 422
        body = json.dumps({"message": f'Secret is invalid: data[x]: Invalid value: "{PLANTED}"'})

    error = api_error(
        Echo(), "applying secret/s", secret_values({"kind": "Secret", "stringData": {"x": PLANTED}})
    )
    assert isinstance(error, K8sStateError)
    assert (
        str(error) == 'applying secret/s: HTTP 422: Secret is invalid: data[x]: Invalid value: "<redacted>"'
    )
    assert scrub(f"a {FORMS[1]} b", FORMS) == "a <redacted> b"


def _leaks(text: str, where: str) -> list[str]:
    return [f"{where}: {form}" for form in FORMS if form in text]


def _local_unavailable() -> str | None:
    """The expected reasons the local provider cannot run here (as tests/plugin/conftest.py)."""
    if os.geteuid() != 0:
        return "the local provider needs root (network namespaces)"
    versions = binaries.Versions.resolve()
    missing = [n for n in (*KUBE_BINARIES, "kwok") if binaries.find_binary(n, versions) is None]
    return f"binaries not installed: {', '.join(missing)}" if missing else None


def test_rejected_secret_value_is_in_no_output_or_artifact(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", REAL_CACHE)
    for opt in vars(k8s_config).values():
        if isinstance(opt, k8s_config._Option):
            monkeypatch.delenv(opt.env, raising=False)
    reason = _local_unavailable()
    if reason is not None:
        pytest.skip(reason)
    installed = any(ep.value == "pytest_k8sstate.plugin" for ep in entry_points(group="pytest11"))
    plugin_args = () if installed else ("-p", "pytest_k8sstate.plugin")
    pytester.makepyfile(test_secret=TESTS)
    (pytester.path / "secret.yaml").write_text(SECRET_YAML)
    name = None
    try:
        leaks: list[str] = []
        for run, verbosity in enumerate(((), ("-vv",))):
            arts = pytester.path / f"arts{run}"
            reuse = () if name is None else (f"--k8sstate-reuse-cluster={name}",)
            result = pytester.runpytest_subprocess(
                *plugin_args,
                "-p",
                "no:cacheprovider",
                "--k8sstate-nodes=0",
                "--k8sstate-keep-cluster",
                f"--k8sstate-artifacts={arts}",
                *verbosity,
                *reuse,
                timeout=300,
            )
            out = result.stdout.str() + result.stderr.str()
            if name is None:
                found = re.findall(r"kept local cluster (\S+): reuse it", out)
                assert found, out
                name = found[0]
            result.assert_outcomes(failed=1)
            assert "applying secret/pt-bad-secret: HTTP 422" in out, out
            assert "kubernetes/client" not in out, out  # no frames of the client (they hold the body)
            assert "kubernetes/dynamic" not in out, out
            leaks += _leaks(out, f"output of run {run}")
            files = [p for p in arts.rglob("*") if p.is_file()]
            assert files, f"no artifacts written in run {run}"
            for path in files:
                leaks += _leaks(path.read_bytes().decode("utf-8", "replace"), str(path))
        assert leaks == []
    finally:
        if name is not None:
            from pytest_k8sstate.providers.registry import get_provider

            get_provider("local", progress=lambda _line: None).delete(name)


# --- patches of a Secret: their values are scrubbed like apply's ---------------------------------
def test_patch_secret_values_of_every_patch_shape() -> None:
    b64 = FORMS[1]
    assert set(patch_secret_values([{"op": "add", "path": "/data/x", "value": b64}])) == set(FORMS)
    assert set(patch_secret_values([{"op": "replace", "path": "/stringData/y", "value": PLANTED}])) == set(
        FORMS
    )
    assert set(patch_secret_values([{"op": "add", "path": "/data", "value": {"x": b64}}])) == set(FORMS)
    assert set(patch_secret_values([{"op": "test", "path": "/data/x", "value": b64}])) == set(FORMS)
    assert set(patch_secret_values({"stringData": {"y": PLANTED}})) == set(FORMS)  # merge / strategic
    assert patch_secret_values([{"op": "add", "path": "/metadata/labels/a", "value": PLANTED}]) == []
    assert patch_secret_values([{"op": "remove", "path": "/data/x"}]) == []
    assert patch_secret_values("not a patch") == []


class _EchoingApiServer:
    """Stands in for an API server that echoes a rejected patch's body in its error (none is running here;
    the real apiserver's messages vary by version and admission plugin, so the worst case is planted)."""

    class resources:  # the DynamicClient attribute
        @staticmethod
        def get(api_version: str, kind: str) -> Any:
            return SimpleNamespace(namespaced=True, kind=kind, api_version=api_version)

    def patch(self, resource: Any, body: Any = None, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        exc = ApiException(status=422, reason="Invalid")
        exc.body = json.dumps({"message": f"{resource.kind} is invalid: {json.dumps(body)}"})
        raise exc


@pytest.mark.parametrize(
    ("patch_type", "body"),
    [
        ("json", [{"op": "add", "path": "/data/bad key!", "value": FORMS[1]}]),
        ("json", [{"op": "add", "path": "/stringData", "value": {"k": PLANTED}}]),
        ("merge", {"stringData": {"k": PLANTED}}),
        ("strategic", {"data": {"k": FORMS[1]}}),
    ],
)
def test_a_rejected_secret_patch_names_no_value(patch_type: str, body: Any) -> None:
    helper = K8sHelper(api_client=None, dynamic=_EchoingApiServer())
    with pytest.raises(K8sStateError) as info:
        helper.patch("secret/s", body, patch_type=patch_type)
    msg = str(info.value)
    assert msg.startswith("patching secret/s: HTTP 422: Secret is invalid: "), msg
    assert "<redacted>" in msg
    assert _leaks(msg, "message") == []


def test_a_configmap_patch_is_not_scrubbed() -> None:
    helper = K8sHelper(api_client=None, dynamic=_EchoingApiServer())
    with pytest.raises(K8sStateError, match="not-a-secret-value"):
        helper.patch(
            "cm/c", [{"op": "add", "path": "/data/x", "value": "not-a-secret-value"}], patch_type="json"
        )
