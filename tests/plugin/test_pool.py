"""ClusterPool bookkeeping that needs no cluster: keys from markers, names per process/worker/pool."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.plugin.options import Settings
from pytest_k8sstate.plugin.pool import ClusterKey, ClusterPool


def test_keys_fill_missing_marker_arguments_from_the_options() -> None:
    pool = ClusterPool(Settings(provider="local", nodes=2, proxy_mode="iptables", version="1.37.1"))
    assert pool.default_key() == ClusterKey("local", 2, "iptables", "1.37.1")
    assert pool.key_for({"proxy_mode": "nftables"}) == ClusterKey("local", 2, "nftables", "1.37.1")
    assert pool.key_for({"nodes": 0, "version": "v1.36.0"}) == ClusterKey("local", 0, "iptables", "1.36.0")
    assert pool.key_for({"nodes": 3}).param_id() == "k8s-local-3w-iptables-1.37.1"
    with pytest.raises(ConfigError, match=r"k8s_clusters.get\(\): invalid nodes=True; expected an int"):
        pool.key_for({"nodes": True}, where="k8s_clusters.get()")


def test_names_are_unique_per_process_worker_pool_and_spec() -> None:
    pid = os.getpid() % 100000
    main = ClusterPool(Settings())
    worker = ClusterPool(Settings(), worker="gw1")
    names = {
        main._name_for(main.default_key()),
        main._name_for(main.key_for({"nodes": 3})),
        main._name_for(main.key_for({"nodes": 4})),
        worker._name_for(worker.default_key()),
    }
    assert len(names) == 4
    assert all(n.startswith(f"pt{pid}") for n in names)
    assert any("gw1" in n for n in names)
    from pytest_k8sstate.providers.base import validate_cluster_name

    for name in names:
        validate_cluster_name(name)


def test_reuse_cluster_name_is_used_for_the_session_spec_only() -> None:
    pool = ClusterPool(Settings(reuse_cluster="dev"))
    assert pool._name_for(pool.default_key()) == "dev"
    assert pool._name_for(pool.key_for({"proxy_mode": "nftables"})) != "dev"
    worker = ClusterPool(Settings(reuse_cluster="dev"), worker="gw3")
    assert worker._name_for(worker.default_key()) == "dev-gw3"


def test_unknown_provider_fails_once_with_the_reason() -> None:
    pool = ClusterPool(Settings(provider="nosuch"))
    with pytest.raises(ConfigError, match="unknown provider 'nosuch'"):
        pool.get(pool.default_key())
    with pytest.raises(
        ProviderError, match="failed to start earlier in this session: unknown provider 'nosuch'"
    ):
        pool.get(pool.default_key())
    assert pool.close() == []


def test_provider_is_made_once_with_the_progress_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TypeError from a provider's constructor is a bug to report, not a cue to retry without ``progress``
    (every registered provider takes it)."""
    calls: list[dict[str, Any]] = []

    def broken_provider(name: str, **options: Any) -> Any:
        calls.append({"name": name, **options})
        raise TypeError("a bug inside the provider's __init__")

    monkeypatch.setattr("pytest_k8sstate.providers.registry.get_provider", broken_provider)
    log = lambda _msg: None  # noqa: E731
    pool = ClusterPool(Settings(provider="local"), log=log)
    with pytest.raises(TypeError, match="a bug inside"):
        pool.provider("local")
    assert calls == [{"name": "local", "progress": log}]


def test_a_cni_the_provider_lacks_fails_before_anything_is_created(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """local sets up no pod network (kwok assigns pod IPs): cni='bridge' is refused, naming the fix, and
    nothing is created (no cluster state directory)."""
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    pool = ClusterPool(Settings(provider="local"))
    key = pool.key_for({"cni": "bridge"})
    assert (key.cni, key.param_id()) == ("bridge", "k8s-local-2w-iptables-bridge")
    assert "CNI bridge" in key.describe()
    with pytest.raises(
        ConfigError, match=r"the local provider cannot use CNI 'bridge'.*use --k8sstate-provider kind"
    ):
        pool.get(key)
    assert pool.close() == []
    assert pool.key_for({}).cni is None
