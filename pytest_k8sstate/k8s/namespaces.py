"""A namespace per test: a DNS-safe unique name, creation (bounded wait for its default objects) and
deletion (bounded wait until it is gone), through the official client's ``CoreV1Api``.

The namespace carries the labels :data:`MANAGED_BY` and :data:`TEST_LABEL` (a hash of the test id), so a
leftover one can be found (``kubectl get ns -l app.kubernetes.io/managed-by=pytest-k8sstate``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

from pytest_k8sstate.k8s.api import api_error, api_failures, is_not_found

__all__ = [
    "MANAGED_BY",
    "NAME_PREFIX",
    "TEST_LABEL",
    "create_namespace",
    "delete_namespace",
    "namespace_exists",
    "namespace_name",
]

NAME_PREFIX = "kst-"
MANAGED_BY = ("app.kubernetes.io/managed-by", "pytest-k8sstate")
TEST_LABEL = "k8sstate.io/test"
MAX_NAME = 63  # a DNS-1123 label
REQUEST_TIMEOUT = 15.0
CREATE_ATTEMPTS = 3
READY_TIMEOUT = 60.0
"""How long creation waits for the controllers' objects in a new namespace (its ``default``
ServiceAccount and ``kube-root-ca.crt`` ConfigMap), so they are not part of the test's diff."""


def namespace_name(test_id: str, *, suffix: str | None = None) -> str:
    """``kst-<test name>-<5 random chars>``: a valid, unique namespace name for a test id.

    The test name is the function name with its parameters (``tests/a.py::test_x[1]`` → ``test-x-1``),
    lowercased, anything but ``[a-z0-9-]`` turned into ``-``, cut to fit 63 characters.
    """
    tail = suffix if suffix is not None else secrets.token_hex(3)[:5]
    base = test_id.rsplit("::", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-") or "test"
    room = MAX_NAME - len(NAME_PREFIX) - len(tail) - 1
    base = base[:room].rstrip("-") or "t"
    return f"{NAME_PREFIX}{base}-{tail}"


def _test_hash(test_id: str) -> str:
    return hashlib.sha256(test_id.encode()).hexdigest()[:16]


def _core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


def _exists(read: Any, *args: Any) -> bool:
    try:
        read(*args, _request_timeout=REQUEST_TIMEOUT)
    except api_failures() as exc:
        if is_not_found(exc):
            return False
        raise api_error(exc, "reading the test namespace") from None
    return True


def create_namespace(
    api_client: Any, name: str, *, test_id: str = "", ready_timeout: float = READY_TIMEOUT
) -> None:
    """Create namespace ``name`` and wait (at most ``ready_timeout``) for its default ServiceAccount and
    root-CA ConfigMap; a cluster without those controllers just costs the wait, it is not an error."""
    core = _core(api_client)
    labels = {MANAGED_BY[0]: MANAGED_BY[1]}
    if test_id:
        labels[TEST_LABEL] = _test_hash(test_id)
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            core.create_namespace(body=body, _request_timeout=REQUEST_TIMEOUT)
        except api_failures() as exc:
            if getattr(exc, "status", None) == 409 and attempt:  # our earlier attempt got through
                break
            # a dropped connection (a POST is not retried by the client) is worth another try
            if getattr(exc, "status", None) is not None or attempt == CREATE_ATTEMPTS - 1:
                raise api_error(exc, f"creating namespace {name}") from None
            time.sleep(0.5 * (attempt + 1))
        else:
            break
    deadline = time.monotonic() + ready_timeout
    pending = [
        (core.read_namespaced_service_account, "default"),
        (core.read_namespaced_config_map, "kube-root-ca.crt"),
    ]
    while pending and time.monotonic() < deadline:
        pending = [(read, obj) for read, obj in pending if not _exists(read, obj, name)]
        if pending:
            time.sleep(0.1)


def delete_namespace(api_client: Any, name: str, *, timeout: float = 60.0) -> str | None:
    """Delete namespace ``name`` and wait until it is gone; returns a problem (text) or None. Never
    raises: a namespace that is still terminating after ``timeout`` is reported with what holds it."""
    core = _core(api_client)
    try:
        core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)
    except api_failures() as exc:
        if is_not_found(exc):
            return None
        return str(api_error(exc, f"deleting namespace {name}"))
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT)
        except api_failures() as exc:
            if is_not_found(exc):
                return None
            return str(api_error(exc, f"waiting for namespace {name} to go"))
        time.sleep(0.2)
    conditions = getattr(getattr(last, "status", None), "conditions", None) or []
    why = "; ".join(
        f"{c.type}: {c.message}" for c in conditions if getattr(c, "status", "") == "True" and c.message
    )
    return (
        f"namespace {name} still terminating after {timeout:g}s"
        + (f" ({why})" if why else "")
        + f"; delete it with: kubectl delete namespace {name}"
    )


def namespace_exists(api_client: Any, name: str) -> bool:
    """Does namespace ``name`` exist? (K8sStateError when the API cannot say.)"""
    return _exists(_core(api_client).read_namespace, name)
