"""Optional extras in tests: skipped on a developer machine without them, a failure in CI.

CI (``CI=true``, as `.ci/run` runs) installs every extra the suite uses, so a missing one there
is an install defect, never a reason to skip silently.
"""
import importlib
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip the calling module (or fail it under CI) because ``reason`` is missing."""
    if in_ci():
        pytest.fail(f"CI installs every extra, but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(module: str, extra: str):
    """Import ``module`` from the ``extra`` install extra, or skip / fail as above."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing(f"{module} is not importable ({e}); install it with pip install -e '.[dev,{extra}]'")
