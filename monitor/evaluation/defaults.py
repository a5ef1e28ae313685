"""Defaults of ``distillation-monitor evaluate``, shared by its options and its runner.

Standard library only: the command module reads these to write its ``--help``, and the
CLI must start without numpy or TensorFlow.
"""

from __future__ import annotations

DEFAULT_SEEDS = "0,1,2"
DEFAULT_EPSILONS = "0.03,0.06,0.1"
DEFAULT_SEVERITIES = "1-5"
DEFAULT_TRIALS = 500
