"""Shared pytest setup. Fixture families live in their own modules, loaded as plugins."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

pytest_plugins = [
    "fixtures_kafka",
    "fixtures_models",
]
