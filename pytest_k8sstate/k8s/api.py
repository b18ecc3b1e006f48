"""What a failed API call is reported as: an HTTP error or an unreachable server — nothing else.

Only errors from the API server (an HTTP status) and connection-level errors (refused, reset, timed out,
TLS) become a :class:`~pytest_k8sstate.errors.K8sStateError`; any other exception (a ``ValueError`` from a
bad object, a bug) is not caught and surfaces as what it is.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_k8sstate.errors import K8sStateError

__all__ = [
    "api_error",
    "api_failures",
    "is_not_found",
    "patch_secret_values",
    "scrub",
    "secret_values",
    "to_dict",
]


@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, SSLError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    urllib3_errors = (MaxRetryError, NewConnectionError, ProtocolError, SSLError, Urllib3Timeout)
    return (*urllib3_errors, ConnectionError, TimeoutError)


@functools.cache
def api_failures() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the API call failed" (use as ``except api_failures() as exc``)."""
    from kubernetes.client.exceptions import ApiException

    return (ApiException, *_connection_errors())


def secret_values(doc: Mapping[str, Any]) -> list[str]:
    """A Secret's ``data``/``stringData`` values (as sent, and base64 / decoded): never to be shown."""
    if doc.get("kind") != "Secret":
        return []
    values: list[str] = []
    for field in ("data", "stringData"):
        entries = doc.get(field)
        if not isinstance(entries, Mapping):
            continue
        for value in entries.values():
            text = str(value)
            values.append(text)
            if field == "stringData":
                values.append(base64.b64encode(text.encode()).decode())
            else:
                with contextlib.suppress(binascii.Error, ValueError):
                    values.append(base64.b64decode(text, validate=True).decode("utf-8", "replace"))
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def patch_secret_values(body: Any) -> list[str]:
    """The values a patch of a Secret writes (never to be shown): a strategic/merge patch's
    ``data``/``stringData``, a JSON patch's ``value`` of every operation on ``/data…``/``/stringData…``."""
    if isinstance(body, Mapping):
        return secret_values({**body, "kind": "Secret"})
    if not isinstance(body, (list, tuple)):
        return []
    values: list[str] = []
    for op in body:
        if not isinstance(op, Mapping) or "value" not in op:
            continue
        path = str(op.get("path") or "")
        field = path.lstrip("/").split("/", 1)[0]
        if field not in ("data", "stringData"):
            continue
        value = op["value"]
        entries = value if isinstance(value, Mapping) and "/" not in path.lstrip("/") else {"v": value}
        values += secret_values({"kind": "Secret", field: entries})
    return sorted(set(values), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``<redacted>``."""
    for value in secrets:
        text = text.replace(value, "<redacted>")
    return text


def api_error(exc: BaseException, what: str, secrets: Iterable[str] = ()) -> K8sStateError:
    """The one-line error for one of :func:`api_failures` while doing ``what`` (``secrets`` scrubbed)."""
    secrets = list(secrets)
    return K8sStateError(scrub(str(_api_error(exc, what)), secrets))


def _api_error(exc: BaseException, what: str) -> K8sStateError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if isinstance(body, (bytes, str)):
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = str(json.loads(body).get("message", ""))
    if not message:
        message = str(getattr(exc, "summary", lambda: "")() if hasattr(exc, "summary") else "") or str(exc)
        message = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if isinstance(exc, _connection_errors()):
        return K8sStateError(f"{what}: cannot reach the API server: {message}")
    if status is None:
        return K8sStateError(f"{what}: API error ({type(exc).__name__}): {message}")
    return K8sStateError(f"{what}: HTTP {status}: {message}")


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 404


def to_dict(obj: Any) -> dict[str, Any]:
    """An API response (dict or ``ResourceInstance``) as a plain dict."""
    if isinstance(obj, dict):
        return obj
    to_dict_method = getattr(obj, "to_dict", None)
    if callable(to_dict_method):
        result: dict[str, Any] = to_dict_method()
        return result
    raise K8sStateError(f"unexpected API response type {type(obj).__name__}")
