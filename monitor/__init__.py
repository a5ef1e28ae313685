"""distillation-monitor: model-distillation harmfulness detection for classifier traffic on Kafka.

The public detector API keeps the method document's names::

    from monitor import ModelDistillation, save_detector, load_detector

TensorFlow is imported only when one of those names is first used, so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitor._version import __version__

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation
    from monitor.detector.persistence import load_detector, save_detector

__all__ = ["ModelDistillation", "__version__", "load_detector", "save_detector"]

_LAZY = {
    "ModelDistillation": "monitor.detector.distillation",
    "save_detector": "monitor.detector.persistence",
    "load_detector": "monitor.detector.persistence",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'monitor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
