"""What ``fit`` checks before and after training, kept free of TensorFlow.

- The output directory: a detector that exists may be the one a running worker loads, so
  it is replaced only with ``--force`` (the swap is atomic: a worker reloading on
  SIGHUP sees the old detector or the new one, never half of each).
- The data: the agreement check and the threshold use the held-out rows, and a handful
  of them cannot estimate either, so fewer than ``MIN_SIDE_ROWS`` a side is refused.
- The threshold: a percentile of n clean scores rests on the n x (1 - p) scores above
  it. With fewer than ``MIN_TAIL_SCORES`` of those, the share of clean records flagged
  in production can land far from the nominal rate (25 scores at the 95th percentile:
  about 1 above it, and 11% flagged instead of 5% was seen), so ``fit`` says so.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from monitor.errors import ConfigError

MIN_SIDE_ROWS = 10
MIN_TAIL_SCORES = 10


def check_output_dir(out: str, force: bool) -> None:
    """Refuse to write over a detector (without ``force``) or anything else that is there."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not (path / "manifest.json").is_file():
        raise ConfigError(f"--out {out} is a directory that holds other files; choose another")
    if not force:
        raise ConfigError(
            f"--out {out} already holds a detector (a worker may be using it); pass --force "
            "to replace it, or choose another directory"
        )


def _enough(n: int, holdout_fraction: float) -> bool:
    holdout = math.ceil(n * holdout_fraction)  # as holdout_split takes it
    return holdout >= MIN_SIDE_ROWS and n - holdout >= MIN_SIDE_ROWS


def check_rows(n: int, holdout_fraction: float) -> None:
    """Enough rows for training and for the held-out part (agreement and threshold)?"""
    if _enough(n, holdout_fraction):
        return
    need = next(m for m in itertools.count(2 * MIN_SIDE_ROWS) if _enough(m, holdout_fraction))
    raise ConfigError(
        f"--data has {n} rows; with --holdout-fraction {holdout_fraction:g} fit needs at "
        f"least {need} ({MIN_SIDE_ROWS} to train on and {MIN_SIDE_ROWS} held out for the "
        "agreement check and the threshold)"
    )


def threshold_warning(n_scores: int, percentile: float) -> str | None:
    """A warning when the threshold rests on too few clean scores above it, else None."""
    share = 1.0 - percentile / 100.0
    if not 0.0 < share < 1.0 or n_scores * share >= MIN_TAIL_SCORES:
        return None
    spread = math.sqrt(share * (1 - share) / n_scores)
    need = math.ceil(MIN_TAIL_SCORES / share)
    good = math.sqrt(share * (1 - share) / need)
    return (
        f"the threshold is the {percentile:g}th percentile of only {n_scores} clean scores "
        f"(about {n_scores * share:.0f} above it), so the share of clean records flagged may "
        f"be far from {share:.0%} (one standard deviation: {spread:.1%}). {need} scores bring "
        f"that to {good:.1%}: pass more clean rows with --threshold-data (or a larger --data)."
    )
