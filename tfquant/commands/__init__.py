"""CLI subcommands beyond the core four (convert, qat, evaluate, inspect), one module each.

Each module here defines ``register(sub)``: it adds its parser to the ``python -m tfquant``
subparsers and sets ``func`` (``args -> exit status``) with ``set_defaults``. Modules are found
by name, so a new command is a new file and touches no shared code. ``func`` runs after
TensorFlow is imported, inside the CLI's one-line-error handling (raise ``TfquantError``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(sub: argparse._SubParsersAction) -> None:
    """Adds every command module's parser to ``sub``, in module-name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
