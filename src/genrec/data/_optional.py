"""Optional dependencies (the ``scale`` extra): imported on first use, with one clear message
when missing, so that ``import genrec`` never needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional"]

#: Import name -> (name in the message, the package that provides it alone).
_PACKAGES = {"ray": ("Ray", "'ray[default]'"), "faiss": ("faiss", "faiss-cpu")}


def optional(module: str, purpose: str) -> ModuleType:
    """The module ``module`` of the ``scale`` extra.

    Args:
        module: Its import name (``ray``, ``faiss``).
        purpose: What needs it, for the message (``--engine ray``).

    Raises:
        ImportError: If it is not installed, saying how to install it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        name, package = _PACKAGES.get(module, (module, module))
        raise ImportError(f"{purpose} needs {name}: pip install 'genrec[scale]' "
                          f"(or {package})") from e
