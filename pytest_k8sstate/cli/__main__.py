"""``python -m pytest_k8sstate.cli``: the ``k8sstate`` command."""

from __future__ import annotations

import sys

from pytest_k8sstate.cli.main import main

sys.exit(main())
