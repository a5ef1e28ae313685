"""A detector per benchmark case and seed, built with ``fit``'s defaults and cached.

``evaluate --case NAME`` measures what a user gets from ``fit`` without options, so the
detector here is built exactly as ``fit`` builds one: the default distilled model for the
classifier's shapes, loss and temperature, trained on 80% of the case's training split
until 95% top-class agreement on the other 20%, threshold at the 95th percentile of the
scores on that held-out 20%. The directory also holds ``case.json`` (case, seed, the
definition version and the classifier's test accuracy) so a cached detector is reused
only for the same case definition. The digits demo keeps its own builder
(``monitor.detector.demo``), whose numbers the docs quote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from monitor.evaluation.cases import load_case

CASE_INFO_FILE = "case.json"
# Raise when a case's data, classifier or detector recipe changes: cached detectors of
# an older definition are rebuilt instead of silently reused.
CASE_DEFINITION = 2
THRESHOLD_PERC = 95.0


def case_of(detector_dir: Path) -> tuple[str, int] | None:
    """(case, seed) a cached case detector was built for, if its ``case.json`` is current."""
    info = detector_dir / CASE_INFO_FILE
    try:
        data = json.loads(info.read_text())
        if data.get("definition") != CASE_DEFINITION:
            return None
        return str(data["case"]), int(data["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_cached(detector_dir: Path, name: str, seed: int) -> bool:
    return (detector_dir / "manifest.json").is_file() and case_of(detector_dir) == (name, seed)


def build_case_detector(
    name: str, seed: int, out_dir: str | os.PathLike[str], verbose: bool = False
) -> Path:
    """Train case ``name``'s classifier for ``seed`` and its detector; save to ``out_dir``."""
    import keras

    from monitor.detector.architectures import DEFAULT_LOSS_TYPE, DEFAULT_TEMPERATURE
    from monitor.detector.distillation import ModelDistillation
    from monitor.detector.ensemble import distil
    from monitor.detector.persistence import save_detector

    case = load_case(name, seed)
    keras.utils.set_random_seed(seed)
    detector = ModelDistillation(
        model=case.classifier,
        loss_type=DEFAULT_LOSS_TYPE,
        temperature=DEFAULT_TEMPERATURE,
        data_type=case.kind,
        threshold=np.inf,  # set below; avoids the "no threshold" warning
    )
    distilled = distil(detector, case.x_train, seed=seed, verbose=verbose)
    x_holdout = distilled.x_holdout
    detector.infer_threshold(x_holdout, threshold_perc=THRESHOLD_PERC)
    out = Path(out_dir)
    save_detector(detector, out, name=f"{name}-case", version=str(seed))
    predicted = detector.classifier_outputs(case.x_test).argmax(axis=1)
    info: dict[str, Any] = {
        "case": name,
        "seed": seed,
        "definition": CASE_DEFINITION,
        "kind": case.kind,
        "train_rows": len(case.x_train),
        "test_rows": len(case.x_test),
        "classifier_test_accuracy": float(np.mean(predicted == case.y_test)),
        "agreement": distilled.agreement,
        "member_epochs": distilled.member_epochs,
        "threshold_rows": len(x_holdout),
        "threshold_perc": THRESHOLD_PERC,
    }
    (out / CASE_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out
