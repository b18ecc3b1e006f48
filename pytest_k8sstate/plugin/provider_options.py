"""The provider-specific options' values (``--k8sstate-kind-*``, ``--k8sstate-minikube-*``,
``--k8sstate-pool``), checked.

The options themselves are registered with every other one in :mod:`pytest_k8sstate.plugin.options`; this
module turns the given ones into ``(provider, keyword, value)`` for ``get_provider(provider, **kw)``
(:meth:`~pytest_k8sstate.plugin.options.Settings.options_for`), with a usage error naming the option, the
value, where it came from and what is expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from pytest_k8sstate.plugin.options import (
    OPT_KIND_CONFIG,
    OPT_KIND_IMAGE,
    OPT_MINIKUBE_CNI,
    OPT_MINIKUBE_CPUS,
    OPT_MINIKUBE_DRIVER,
    OPT_MINIKUBE_MEMORY,
    OPT_POOL,
    OPT_PROVIDER,
    _bad,
    _int,
    _lookup,
    _path,
)

__all__ = ["MAX_POOL", "provider_options", "warm_pool"]

MAX_POOL = 8


def warm_pool(config: pytest.Config, env: Mapping[str, str], provider: str) -> int:
    """``--k8sstate-pool N``: 0 to :data:`MAX_POOL`; local clusters only (given on the command line with
    another provider: a usage error; from the environment or the ini file: 0, a machine-wide setting)."""
    from pytest_k8sstate.errors import ConfigError
    from pytest_k8sstate.providers.local.warm import idle_limit

    pool = _int(config, OPT_POOL, env, 0, MAX_POOL, "warm clusters")
    raw = _lookup(config, OPT_POOL, env)
    if pool and provider != "local" and raw is not None:
        if not raw.origin.startswith("command line"):
            return 0
        why = "the warm pool keeps local clusters; on kind, fresh=True resets a cluster in seconds"
        raise _bad(OPT_POOL, raw, f"0 with {OPT_PROVIDER.flag} {provider} ({why})")
    if pool:
        try:
            idle_limit(env if isinstance(env, dict) else dict(env))
        except ConfigError as exc:
            raise pytest.UsageError(f"{OPT_POOL.flag} {pool}: {exc}") from None
    return pool


def provider_options(
    config: pytest.Config, env: Mapping[str, str]
) -> tuple[tuple[str, str, str | int | Path], ...]:
    out: list[tuple[str, str, str | int | Path]] = []
    kind_config = _path(config, OPT_KIND_CONFIG, env)
    if kind_config is not None:
        if not kind_config.is_file():
            raise pytest.UsageError(
                f"{OPT_KIND_CONFIG.flag}: {kind_config} is not a file; give a kind Cluster config (YAML)"
            )
        out.append(("kind", "config_file", kind_config))
    for opt, provider, name, pattern, expected in (
        (
            OPT_KIND_IMAGE,
            "kind",
            "image",
            r"[\w./:@-]{1,255}",
            "an image reference like kindest/node:v1.37.1",
        ),
        (
            OPT_MINIKUBE_DRIVER,
            "minikube",
            "driver",
            r"[a-z0-9][a-z0-9-]{0,30}",
            "a driver name such as docker",
        ),
        (
            OPT_MINIKUBE_CNI,
            "minikube",
            "cni",
            r"[\w./-]{1,255}",
            "auto, bridge, calico, flannel, ... or a path",
        ),
        (
            OPT_MINIKUBE_MEMORY,
            "minikube",
            "memory",
            r"(?i)[1-9][0-9]{0,7}([kmgt]b?)?|max|no-limit",
            "megabytes or a size like 4g",
        ),
    ):
        raw = _lookup(config, opt, env)
        if raw is None:
            continue
        value = raw.value.strip()
        if not re.fullmatch(pattern, value):
            raise _bad(opt, raw, expected)
        out.append((provider, name, value))
    raw = _lookup(config, OPT_MINIKUBE_CPUS, env)
    if raw is not None:
        value = raw.value.strip()
        if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 1024:
            raise _bad(OPT_MINIKUBE_CPUS, raw, "a whole number of CPUs from 1 to 1024")
        out.append(("minikube", "cpus", int(value)))
    return tuple(out)
