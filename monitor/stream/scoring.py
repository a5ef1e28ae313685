"""The detector as the worker holds it: loaded, identified, scored per batch, hot-swapped.

A reload builds the new detector completely before swapping it in between batches; if it
fails (missing file, bad manifest, shapes that don't fit) the old one keeps running.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monitor.cpus import available_cpus
from monitor.stream.alerts import DetectorIdentity

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation

log = logging.getLogger(__name__)


def tensorflow_threads(requested: int, cpus: int | None = None) -> int:
    """Threads for TensorFlow's ops: ``requested``, or for 0 every CPU this process may
    use, its affinity capped by its container's CPU quota (at least 1).

    TensorFlow's own default counts the node's cores, which oversubscribes a container's
    CPU limit. Scoring is the worker's costliest step with ``fit``'s default detector
    (five distilled models beside the classifier): on 2 cores, two threads ran the
    digits backlog 12% faster than one thread that left a core to decoding and Kafka (a
    CNN, whose JSON decoding keeps both cores busy anyway: the same), at the same
    latency under a steady load. A much lighter detector may do better with 1.
    """
    if requested > 0:
        return requested
    if cpus is None:
        cpus = available_cpus()
    return max(1, cpus)


def limit_tensorflow_threads(threads: int) -> None:
    """Run TensorFlow's ops on ``tensorflow_threads(threads)`` threads (intra- and
    inter-op). Only possible before TensorFlow's runtime starts; a process that already
    ran TensorFlow (tests, notebooks) keeps its setting. TensorFlow starts here, its C++
    start-up lines kept off the terminal (``tf_runtime.start_tensorflow``)."""
    from monitor.detector.tf_runtime import start_tensorflow

    wanted = tensorflow_threads(threads)
    tf = start_tensorflow(wanted, wanted)
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current != wanted:
        log.info(
            "TensorFlow already started: keeping its %s intra-op thread(s)",
            current or "default",
        )


#: Input elements TensorFlow scores at once (8 MB of float32): the largest chunk of a
#: batch is this many elements' rows. Activations grow with the chunk, and for images
#: they dwarf the input: a CNN on 32x32x3 scored 2,048 rows at a time held some 400 MB
#: of them. With five distilled models beside the classifier, 512 such rows at a time
#: kept the bench's CNN worker near 1.4 GB of peak RSS where 1,024 reached 1.5 GB, at
#: the same throughput; a small input (the 8x8 digits) still scores the whole batch.
MAX_CHUNK_ELEMENTS = 2 * 1024 * 1024


def chunk_rows(batch_size: int, input_shape: tuple[int, ...]) -> int:
    """Rows scored at once: ``batch_size``, or the largest power of two of rows that
    holds at most ``MAX_CHUNK_ELEMENTS`` input elements, whichever is smaller."""
    per_row = max(1, math.prod(input_shape))
    fits = max(1, MAX_CHUNK_ELEMENTS // per_row)
    return min(batch_size, 1 << (fits.bit_length() - 1))


def padded_rows(n: int, batch_size: int) -> int:
    """Rows to score ``n`` rows in batches of ``batch_size``: full batches, then the rest
    rounded up to a power of two or one and a half times one (at least 8).

    TensorFlow's oneDNN kernels build and cache a primitive for every input shape they
    meet. With a batch size per batch (trickles, multi-row records, byte-bounded
    batches) the cache, and the process, grew for as long as new sizes came, and
    building the primitives cost more than the scoring: in one measurement, 6,000 batches
    of random sizes took 14 s and grew the RSS from 845 to 870 MB, the same batches
    padded to powers of two 7 s at a flat 794 MB. These sizes are at most a third
    larger than the rows, and a handful of shapes in all.
    """
    full, rest = divmod(n, batch_size)
    if not rest:
        return n
    size = 8
    while size < rest:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return full * batch_size + min(size, batch_size)


@dataclass(frozen=True)
class BatchScores:
    scores: np.ndarray  # float32 (n,)
    flagged: np.ndarray  # bool (n,)
    classifier_class: np.ndarray  # int (n,)
    distilled_class: np.ndarray  # int (n,)
    detector: DetectorIdentity  # the detector that scored them (a reload may follow)


def identity_of(detector: ModelDistillation) -> DetectorIdentity:
    manifest = detector.manifest
    if manifest is None:
        raise ValueError("the worker needs a detector loaded from a directory (it has no manifest)")
    if detector.threshold is None:
        raise ValueError("the detector has no threshold: run infer_threshold before saving it")
    return DetectorIdentity(
        name=str(manifest.name),
        version=str(manifest.version),
        loss_type=str(detector.loss_type),
        temperature=float(detector.temperature),
        manifest_hash=str(manifest.sha256)[:16],
        threshold=float(detector.threshold),
    )


class DetectorHandle:
    """The current detector plus what the worker needs to know about it."""

    def __init__(self, path: str | Path, batch_size: int) -> None:
        self.path = Path(path)
        self.requested_batch_size = batch_size
        self.batch_size = batch_size  # rows scored at once: ``chunk_rows``, set by ``_load``
        self.detector, self.identity = self._load()
        self._manifest_mtime = self._mtime()

    def _mtime(self) -> float:
        try:
            return os.stat(self.path / "manifest.json").st_mtime
        except OSError:
            return 0.0

    def _load(self) -> tuple[ModelDistillation, DetectorIdentity]:
        from monitor.detector.persistence import load_detector

        detector = load_detector(self.path)
        identity = identity_of(detector)
        self.batch_size = chunk_rows(self.requested_batch_size, tuple(detector.input_shape))
        # Trace the scoring function once now, not on the first record.
        warm = np.zeros((1, *detector.input_shape), dtype=np.float32)
        detector.score_classes(warm, batch_size=self.batch_size)
        return detector, identity

    def manifest_changed(self) -> bool:
        return self._mtime() != self._manifest_mtime

    def reload(self) -> bool:
        """Load the detector again; keep the old one on any failure. True when swapped."""
        try:
            detector, identity = self._load()
        except Exception as exc:  # fail safe: any error keeps the running detector
            self._manifest_mtime = self._mtime()
            log.error(
                "detector reload from %s failed, keeping %s: %s",
                self.path,
                self.identity.manifest_hash,
                exc,
            )
            return False
        old = self.identity
        if (
            detector.input_shape != self.detector.input_shape
            or detector.n_classes != self.detector.n_classes
        ):
            log.error(
                "detector reload refused: input shape %s/%d classes differ from the running %s/%d",
                detector.input_shape,
                detector.n_classes,
                self.detector.input_shape,
                self.detector.n_classes,
            )
            self._manifest_mtime = self._mtime()
            return False
        self.detector, self.identity = detector, identity
        self._manifest_mtime = self._mtime()
        log.info(
            "detector reloaded: %s v%s (%s) -> %s v%s (%s), threshold %.6g",
            old.name,
            old.version,
            old.manifest_hash,
            identity.name,
            identity.version,
            identity.manifest_hash,
            identity.threshold,
        )
        return True

    def score(self, X: np.ndarray, outputs: np.ndarray | None) -> BatchScores:
        """Score a batch; with ``outputs`` (the classifier's logged output for every row)
        only the distilled model runs. Batches where only some rows carry an output are
        scored with the classifier (the decoder gives ``outputs`` only when all rows have one).
        """
        identity = self.identity
        n = len(X)
        padded = padded_rows(n, self.batch_size)
        if padded != n:
            X = _pad(X, padded, 0.0)
            if outputs is not None:  # padded with a valid distribution: outputs are checked
                outputs = _pad(outputs, padded, 1.0 / outputs.shape[1])
        scores, classifier_class, distilled_class = self.detector.score_classes(
            X, outputs, batch_size=self.batch_size, trusted=True
        )
        if padded != n:
            scores, classifier_class, distilled_class = (
                scores[:n],
                classifier_class[:n],
                distilled_class[:n],
            )
        return BatchScores(
            scores=scores,
            flagged=scores > identity.threshold,
            classifier_class=classifier_class,
            distilled_class=distilled_class,
            detector=identity,
        )


def _pad(rows: np.ndarray, n: int, fill: float) -> np.ndarray:
    """``rows`` followed by rows of ``fill`` up to ``n`` (their scores are dropped)."""
    padded = np.full((n, *rows.shape[1:]), fill, dtype=rows.dtype)
    padded[: len(rows)] = rows
    return padded
