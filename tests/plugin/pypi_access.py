"""Whether PyPI can be reached (the install and pytest-kubernetes tests need it)."""

from __future__ import annotations

import socket


def pypi_unreachable() -> str | None:
    """Why PyPI cannot be used here (None when it can)."""
    try:
        with socket.create_connection(("pypi.org", 443), timeout=10):
            return None
    except OSError as exc:
        return f"PyPI is not reachable ({exc}); this test installs packages from it"
