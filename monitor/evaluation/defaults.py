"""Defaults of ``distillation-monitor evaluate``, shared by its options and its runner.

Standard library only: the command module reads these to write its ``--help``, and the
CLI must start without numpy or TensorFlow.
"""

from __future__ import annotations

DEFAULT_SEEDS = "0,1,2"
DEFAULT_EPSILONS = "0.03,0.06,0.1"
DEFAULT_SEVERITIES = "1-5"
DEFAULT_TRIALS = 500
DEFAULT_TABULAR_EPSILONS = "0.1,0.25,0.5"

# The benchmark cases ``evaluate --case`` runs by name (built in ``monitor.evaluation.cases``;
# listed here so ``--help`` needs neither numpy nor TensorFlow).
DEFAULT_CASE = "digits"
CASES: dict[str, str] = {
    "digits": "sklearn digits 8x8 in [0, 1], MLP classifier (the demo)",
    "digits_cnn": "sklearn digits 8x8x1 in [0, 1], small CNN classifier",
    "wine": "sklearn wine, 13 standardised features, 3 classes, small MLP",
    "breast_cancer": "sklearn breast cancer, 30 standardised features, 2 classes, small MLP",
}
