"""The project's networks (the top-level ``models`` package), whatever the caller's sys.path.

``models`` is a common folder name: run from a directory holding its own ``models`` package, a
plain ``import models`` finds the user's. The library therefore reaches the project's networks
only through this module: when ``models`` resolves to the project's folder it is used as usual
(one copy, one registry); otherwise that folder is imported under the private name
``_deepcompression_models``, which no one else claims. ``models/`` imports itself relatively, so
either way it is one self-contained package. Every public name of ``models`` (``build_model``,
``UnknownModelError``, ``DATA_KWARGS``, ``register_model``, the network classes...) is available
here, e.g. ``from deepcompression.networks import build_model``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "models"
ALIAS = "_deepcompression_models"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
"""The project's ``models`` folder: a sibling of ``deepcompression/`` in a checkout, an editable
install or site-packages alike."""


def _is_project_file(origin: str | None) -> bool:
    """Whether `origin` (a module's file) is the project's ``models/__init__.py``."""
    if not origin:
        return False
    try:
        return Path(origin).resolve() == PACKAGE_DIR / "__init__.py"
    except OSError:
        return False


def _load_aliased() -> ModuleType:
    """Import the project's ``models`` folder as ``_deepcompression_models`` (by its location)."""
    spec = importlib.util.spec_from_file_location(
        ALIAS, PACKAGE_DIR / "__init__.py", submodule_search_locations=[str(PACKAGE_DIR)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(
            f"the project's networks are missing from {PACKAGE_DIR}; reinstall deep-compression"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[ALIAS] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[ALIAS]
        raise
    return module


def project_models() -> ModuleType:
    """The project's ``models`` package: ``models`` itself when that name is the project's, else
    the same folder imported under a private alias (never the caller's own ``models``)."""
    current = sys.modules.get(PACKAGE)
    if current is not None and _is_project_file(getattr(current, "__file__", None)):
        return current
    if ALIAS in sys.modules:
        return sys.modules[ALIAS]
    if current is None:
        try:
            spec = importlib.util.find_spec(PACKAGE)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and _is_project_file(spec.origin):
            return importlib.import_module(PACKAGE)
    return _load_aliased()


def __getattr__(name: str) -> Any:
    """Any public name of the project's ``models`` package (PEP 562), resolved on first use."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(project_models(), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
