"""The project's local Kafka broker (``deploy/local/kafka.py``), reached from the package.

The script lives outside the package (it is also run by ``make``), so it is imported by
path from the source checkout; an installed package without the checkout says so clearly.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from monitor.errors import DemoError

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.py"
# deploy/local/kafka.py's BOOTSTRAP, port override included (a test checks they agree)
LOCAL_BOOTSTRAP = f"127.0.0.1:{os.environ.get('DMON_LOCAL_KAFKA_PORT', '19092')}"


def local_kafka() -> ModuleType:
    """The ``deploy/local/kafka.py`` module."""
    if not SCRIPT.is_file():
        raise DemoError(
            f"the local broker script {SCRIPT} is missing (run from a source checkout, "
            "or pass --bootstrap-servers to use your own cluster)"
        )
    spec = importlib.util.spec_from_file_location("dmon_local_kafka", SCRIPT)
    if spec is None or spec.loader is None:
        raise DemoError(f"cannot import {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_local_broker() -> str:
    """Start the local broker unless it runs; return its bootstrap address."""
    return str(local_kafka().ensure_up())
