"""CLI commands, one module each, discovered at start.

Every module here exposes ``ORDER: int`` (its place in ``--help``) and
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``(args) -> int``. Modules import only the standard library (and light option modules such
as ``monitor.config`` or ``monitor.evaluation.defaults``) at import time: TensorFlow and
Kafka are imported inside the command that needs them, so ``--help`` answers in well under
a second.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    """All command modules, in ``--help`` order."""
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
