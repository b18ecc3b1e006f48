"""The providers by name: which module and class implement each, and loading them.

Each provider module exposes a ``provider(**options)`` factory and its :class:`Provider` subclass. The
class alone answers questions that need no cluster and no options (capabilities, skip reasons, prechecks):
:func:`provider_class`; :func:`get_provider` makes an instance.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.providers.base import Provider

__all__ = ["REGISTRY", "get_provider", "provider_class"]

# provider name -> (module with a ``provider(**options)`` factory, the Provider class in it)
REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("pytest_k8sstate.providers.local.provider", "LocalProvider"),
    "kind": ("pytest_k8sstate.providers.kind.provider", "KindProvider"),
    "minikube": ("pytest_k8sstate.providers.minikube", "MinikubeProvider"),
    "existing": ("pytest_k8sstate.providers.existing", "ExistingProvider"),
}


def _entry(name: str) -> tuple[ModuleType, str]:
    entry = REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ConfigError(f"unknown provider {name!r}; known providers: {', '.join(REGISTRY)}")
    modname, classname = entry
    return importlib.import_module(modname), classname


def provider_class(name: str) -> type[Provider]:
    """The :class:`Provider` subclass registered as ``name`` (ConfigError for an unknown name)."""
    module, classname = _entry(name)
    cls = getattr(module, classname, None)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"{module.__name__}.{classname} is not a Provider subclass")
    return cls


def get_provider(name: str, **options: Any) -> Provider:
    """Load the provider module registered as ``name`` and call its ``provider(**options)``."""
    module, _ = _entry(name)
    factory = getattr(module, "provider", None)
    if factory is None:
        raise ConfigError(f"module {module.__name__} has no provider() factory")
    prov = factory(**options)
    if not isinstance(prov, Provider):
        raise ConfigError(f"{module.__name__}.provider() returned {type(prov).__name__}, not a Provider")
    return prov
