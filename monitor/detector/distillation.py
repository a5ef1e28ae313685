"""ModelDistillation: the harmfulness detector of the method document.

A distilled model is trained to reproduce the (temperature-scaled) output distribution of
a frozen classifier. The score of an input is the distillation loss between the two
models' outputs on it; inputs scoring above the threshold are flagged.

Scoring runs in compiled ``tf.function``s whose input signatures have a ``None`` batch
dimension, so any batch size reuses one trace; inputs are validated with vectorised
numpy checks that name the offending rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from monitor._version import __version__
from monitor.detector.architectures import default_distilled_model
from monitor.detector.losses import (
    DistillationLoss,
    check_loss_type,
    check_temperature,
    instance_scores,
)
from monitor.errors import DetectorError, InputValidationError

if TYPE_CHECKING:
    from monitor.detector.manifest import Manifest

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1024
# Logged classifier outputs may be rounded (e.g. JSON with a few decimals).
PROBABILITY_SUM_TOLERANCE = 1e-2
_MAX_ROWS_NAMED = 10
DEFAULT_REFERENCE_SIZE = 2000

ScoreResult = np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]


def _name_rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_MAX_ROWS_NAMED])
    more = f" and {len(rows) - _MAX_ROWS_NAMED} more" if len(rows) > _MAX_ROWS_NAMED else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """Indices of rows holding NaN or +-Inf (vectorised, for whole batches)."""
    if x.dtype.kind not in "fc" or x.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))


def reference_sample(
    scores: np.ndarray, size: int = DEFAULT_REFERENCE_SIZE, seed: int = 0
) -> list[float]:
    """Up to ``size`` of ``scores`` (a seeded sample without replacement), sorted.

    A sample, not quantiles, so that a two-sample KS test against it keeps its meaning.
    """
    sample = np.asarray(scores, dtype=np.float32)
    if len(sample) > size:
        sample = sample[np.random.default_rng(seed).choice(len(sample), size, replace=False)]
    return [float(s) for s in np.sort(sample)]


def _check_threshold(threshold: float | None) -> float | None:
    """None, a finite number, or +inf as a placeholder until ``infer_threshold``.

    NaN would never flag and -inf would flag everything. +inf flags nothing too, but
    ``predict`` refuses it and it cannot be saved, so the worker never scores with it.
    """
    if threshold is None:
        return None
    value = float(threshold)
    if math.isnan(value) or value == -math.inf:
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return value


def _as_numeric_array(x: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputValidationError(f"{what} is not a rectangular numeric array: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise InputValidationError(
            f"{what} must hold integers or floats, got dtype {arr.dtype} "
            "(convert strings/objects to numbers first)"
        )
    return arr


def _model_shapes(model: keras.Model, what: str) -> tuple[tuple[int, ...], int]:
    """Input shape (without batch) and number of classes of a single-input, single-output model."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs, outputs = None, None
    if not inputs or not outputs:
        raise DetectorError(f"{what} must be a built Keras model with a defined input shape")
    if len(inputs) != 1 or len(outputs) != 1:
        raise DetectorError(f"{what} must have exactly one input and one output")
    in_shape = tuple(inputs[0].shape[1:])
    out_shape = tuple(outputs[0].shape[1:])
    if any(d is None for d in in_shape):
        raise DetectorError(f"{what} input shape {in_shape} must be fully defined (except batch)")
    if len(out_shape) != 1 or out_shape[0] is None or out_shape[0] < 2:
        raise DetectorError(f"{what} must output class probabilities, got shape {out_shape}")
    return tuple(int(d) for d in in_shape), int(out_shape[0])


class ModelDistillation:
    """Harmfulness detector comparing a classifier with its distilled copy.

    Parameters keep the method document's names and defaults. ``model`` is a trained
    Keras classifier with softmax outputs (its layers are frozen). Without
    ``distilled_model``, a default architecture derived from the classifier's shapes is
    used (see ``architectures.default_distilled_model``).
    """

    def __init__(
        self,
        threshold: float | None = None,
        distilled_model: keras.Model | None = None,
        model: keras.Model | None = None,
        loss_type: str = "kld",
        temperature: float = 1.0,
        data_type: str | None = None,
    ) -> None:
        self.loss_type = check_loss_type(loss_type)
        self.temperature = check_temperature(temperature)
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a Keras model, got {type(model).__name__}")
        if distilled_model is not None and not isinstance(distilled_model, keras.Model):
            raise TypeError(
                f"distilled_model must be a Keras model, got {type(distilled_model).__name__}"
            )
        self.model = model
        self.model.trainable = False
        self._input_shape, self._n_classes = _model_shapes(model, "model")
        self.input_dtype = np.dtype(keras.backend.standardize_dtype(model.inputs[0].dtype))
        if distilled_model is None:
            distilled_model = default_distilled_model(self._input_shape, self._n_classes)
        self.distilled_model = distilled_model
        self._check_distilled()
        self.threshold = _check_threshold(threshold)
        self.data_type = data_type
        self.reference_scores: list[float] = []
        self.manifest: Manifest | None = None
        self.meta: dict[str, Any] = {
            "name": type(self).__name__,
            "detector_type": "adversarial",
            "data_type": data_type,
            "online": False,
            "version": __version__,
        }
        self._score_x: Any = None
        self._score_y: Any = None
        self._predict_model: Any = None
        self._classes: tuple[Any, Any] | None = None
        if self.threshold is None:
            logger.warning("No threshold set: call infer_threshold before predict.")

    # -- shapes and validation -------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one instance (without the batch dimension)."""
        return self._input_shape

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def replace_distilled_model(self, distilled_model: keras.Model) -> None:
        """Score with another distilled model from now on (``fit``'s ensemble uses it).

        The new model is checked against the classifier's shapes like the one given at
        construction; the compiled scoring functions are rebuilt on the next call. The
        threshold and reference scores are left as they are: infer them again.
        """
        if not isinstance(distilled_model, keras.Model):
            raise TypeError(
                f"distilled_model must be a Keras model, got {type(distilled_model).__name__}"
            )
        previous = self.distilled_model
        self.distilled_model = distilled_model
        try:
            self._check_distilled()
        except DetectorError:
            self.distilled_model = previous
            raise
        self._score_x = self._score_y = None
        self._classes = None

    def _check_distilled(self) -> None:
        """Build the distilled model if needed and check it fits the classifier's shapes."""
        probe = np.zeros((1, *self._input_shape), dtype=self.input_dtype)
        try:
            y = np.asarray(self.model(probe, training=False))
            y_d = np.asarray(self.distilled_model(probe, training=False))
        except Exception as exc:  # Keras raises many types for shape mismatches
            raise DetectorError(
                f"distilled_model does not accept the classifier's input shape "
                f"{self._input_shape}: {exc}"
            ) from exc
        if y_d.shape != (1, self._n_classes):
            raise DetectorError(
                f"distilled_model outputs shape {y_d.shape[1:]}, the classifier "
                f"({self._n_classes} classes) outputs {y.shape[1:]}"
            )
        for what, out in (("model", y), ("distilled_model", y_d)):
            if (out < 0).any() or abs(float(out.sum()) - 1.0) > 1e-3:
                raise DetectorError(f"{what} must end in a softmax (outputs summing to 1)")

    def validate(self, X: Any) -> np.ndarray:
        """``X`` as a contiguous array of the model's input dtype, or a clear error.

        Checks the instance shape against the classifier's input, a numeric dtype and
        finite values (after the cast, so float64 values too large for float32 count).
        """
        arr = _as_numeric_array(X, "input")
        if arr.ndim != len(self._input_shape) + 1 or arr.shape[1:] != self._input_shape:
            raise InputValidationError(
                f"input has shape {arr.shape}, expected (n, {', '.join(map(str, self._input_shape))})"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr, dtype=self.input_dtype)
        bad = nonfinite_rows(arr)
        if len(bad):
            raise InputValidationError(
                f"input {_name_rows(bad)} hold NaN or Inf (or values too large for {arr.dtype})"
            )
        return arr

    def validate_outputs(self, y: Any, n: int) -> np.ndarray:
        """Classifier outputs as float32 probability rows matching ``n`` instances."""
        arr = _as_numeric_array(y, "classifier output")
        if arr.shape != (n, self._n_classes):
            raise InputValidationError(
                f"classifier output has shape {arr.shape}, expected ({n}, {self._n_classes})"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
        bad = nonfinite_rows(arr)
        if len(bad):
            raise InputValidationError(f"classifier output {_name_rows(bad)} hold NaN or Inf")
        sums = arr.sum(axis=1, dtype=np.float64)
        bad = np.flatnonzero(
            (arr < 0).any(axis=1)
            | (arr > 1).any(axis=1)
            | (np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
        )
        if len(bad):
            raise InputValidationError(
                f"classifier output {_name_rows(bad)} are not probabilities "
                "(values in [0, 1] summing to 1)"
            )
        return arr

    # -- compiled functions ----------------------------------------------------------

    def _input_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec((None, *self._input_shape), tf.as_dtype(self.input_dtype), name="x")

    def _compile(self) -> None:
        model, distilled = self.model, self.distilled_model
        loss_type, temperature = self.loss_type, self.temperature

        @tf.function(input_signature=[self._input_spec()])
        def score_x(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            y = tf.cast(model(x, training=False), tf.float32)
            y_d = tf.cast(distilled(x, training=False), tf.float32)
            return instance_scores(y, y_d, loss_type, temperature), y, y_d

        @tf.function(
            input_signature=[tf.TensorSpec((None, self._n_classes), tf.float32), self._input_spec()]
        )
        def score_y(y: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            y_d = tf.cast(distilled(x, training=False), tf.float32)
            return instance_scores(y, y_d, loss_type, temperature), y_d

        @tf.function(input_signature=[self._input_spec()])
        def predict_model(x: tf.Tensor) -> tf.Tensor:
            return tf.cast(model(x, training=False), tf.float32)

        self._score_x, self._score_y = score_x, score_y
        # The classifier's function outlives a new distilled model (replace_distilled_model).
        self._predict_model = self._predict_model or predict_model

    def _compile_classes(self) -> tuple[Any, Any]:
        """Concrete functions returning scores and both models' top classes in one call.

        Concrete (not polymorphic) functions skip the per-call signature binding; one call
        per batch means one release of the GIL per batch, which matters when another
        thread (the worker's intake) is waiting to run Python.
        """
        if self._classes is None:
            score_x, score_y, _ = self._functions()

            def top(p: tf.Tensor) -> tf.Tensor:
                return tf.argmax(p, axis=1, output_type=tf.int32)

            @tf.function(input_signature=score_x.input_signature)
            def classes_x(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                score, y, y_d = score_x(x)
                return score, top(y), top(y_d)

            @tf.function(input_signature=score_y.input_signature)
            def classes_y(y: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                score, y_d = score_y(y, x)
                return score, top(y), top(y_d)

            self._classes = (classes_x.get_concrete_function(), classes_y.get_concrete_function())
        return self._classes

    def _functions(self) -> tuple[Any, Any, Any]:
        if self._score_x is None:
            self._compile()
        return self._score_x, self._score_y, self._predict_model

    @staticmethod
    def _batches(n: int, batch_size: int) -> range:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return range(0, n, int(batch_size))

    def classifier_outputs(self, X: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """The frozen classifier's probabilities on ``X`` (float32, (n, classes))."""
        x = self.validate(X)
        predict = self._functions()[2]
        parts = [predict(x[i : i + batch_size]).numpy() for i in self._batches(len(x), batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, self._n_classes), dtype=np.float32)

    # -- the method's API ------------------------------------------------------------

    def fit(
        self,
        X: np.ndarray,
        loss_fn: Callable[..., Any] | None = None,
        optimizer: Any = None,
        epochs: int = 20,
        batch_size: int = 128,
        verbose: bool = True,
        log_metric: tuple[str, Any] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        preprocess_fn: Callable[[np.ndarray], Any] | None = None,
    ) -> keras.callbacks.History:
        """Train the distilled model to match the classifier's outputs on ``X``.

        ``loss_fn(y_classifier, y_distilled)`` defaults to ``DistillationLoss`` with this
        detector's loss type and temperature; ``optimizer`` (class or instance) to
        ``Adam(learning_rate=1e-3)``. ``preprocess_fn`` is applied to every batch before
        both models see it. ``log_metric`` is a ``(name, keras metric)`` pair shown next
        to the loss. Returns the Keras ``History``.
        """
        x = self.validate(X)
        if len(x) == 0:
            raise InputValidationError("cannot fit on an empty array")
        if loss_fn is None:
            loss_fn = DistillationLoss(self.loss_type, self.temperature)
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        elif isinstance(optimizer, type):
            optimizer = optimizer()
        metrics = []
        if log_metric is not None:
            name, metric = log_metric
            if isinstance(metric, keras.metrics.Metric):
                metric.name = name
            metrics.append(metric)
        inputs = keras.Input(shape=self._input_shape, dtype=str(self.input_dtype))
        trainer = keras.Model(inputs, self.distilled_model(inputs), name="distillation_trainer")
        trainer.compile(optimizer=optimizer, loss=loss_fn, metrics=metrics or None)
        if preprocess_fn is None:
            targets = self.classifier_outputs(x)
            return trainer.fit(
                x,
                targets,
                epochs=epochs,
                batch_size=batch_size,
                shuffle=True,
                verbose=1 if verbose else 0,
                callbacks=list(callbacks or []),
            )
        data = _PreprocessedBatches(x, batch_size, preprocess_fn, self._functions()[2])
        return trainer.fit(
            data, epochs=epochs, verbose=1 if verbose else 0, callbacks=list(callbacks or [])
        )

    def infer_threshold(
        self,
        X: np.ndarray,
        threshold_perc: float = 99.0,
        margin: float = 0.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        reference_size: int = DEFAULT_REFERENCE_SIZE,
        seed: int = 0,
    ) -> float:
        """Set the threshold to the ``threshold_perc`` percentile of ``score(X)`` plus ``margin``.

        Also keeps up to ``reference_size`` of these scores (a seeded sample, sorted) as the
        reference distribution that a saved manifest carries for drift tests.
        """
        if not 0.0 <= threshold_perc <= 100.0:
            raise ValueError(f"threshold_perc must be in [0, 100], got {threshold_perc}")
        if not math.isfinite(margin):
            raise ValueError(f"margin must be a finite number, got {margin!r}")
        scores = self.score(X, batch_size=batch_size)
        assert isinstance(scores, np.ndarray)
        if len(scores) == 0:
            raise InputValidationError("cannot infer a threshold from an empty array")
        threshold = float(np.percentile(scores.astype(np.float64), threshold_perc)) + float(margin)
        if not math.isfinite(threshold):
            raise InputValidationError(
                f"the inferred threshold is {threshold}, not a finite number"
            )
        self.threshold = threshold
        self.reference_scores = reference_sample(scores, reference_size, seed)
        return self.threshold

    def score(
        self, X: Any, batch_size: int = DEFAULT_BATCH_SIZE, return_predictions: bool = False
    ) -> ScoreResult:
        """Per-instance harmfulness scores (float32, shape (n,)).

        With ``return_predictions``, returns ``(score, y, y_d)``: the classifier's
        probabilities (before temperature scaling) and the distilled model's.
        """
        x = self.validate(X)
        score_x = self._functions()[0]
        parts = [score_x(x[i : i + batch_size]) for i in self._batches(len(x), batch_size)]
        return self._collect(parts, return_predictions, given_y=None)

    def score_outputs(
        self,
        y: Any,
        X: Any,
        batch_size: int = DEFAULT_BATCH_SIZE,
        return_predictions: bool = False,
    ) -> ScoreResult:
        """Scores from the classifier's outputs ``y`` as logged, running only the distilled model."""
        x = self.validate(X)
        y_arr = self.validate_outputs(y, len(x))
        score_y = self._functions()[1]
        parts = [
            score_y(y_arr[i : i + batch_size], x[i : i + batch_size])
            for i in self._batches(len(x), batch_size)
        ]
        return self._collect(parts, return_predictions, given_y=y_arr)

    def score_classes(
        self,
        X: Any,
        y: Any = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        trusted: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(score, classifier_class, distilled_class)`` per instance, in one compiled call
        per batch: what a streaming scorer needs, without the probability rows.

        With ``y`` (the classifier's logged outputs) only the distilled model runs.
        ``trusted`` skips the input checks for arrays already known to be finite, of the
        right shape and float32 (the worker's decoder guarantees it); anything else is
        validated as in ``score``.
        """
        if trusted and (
            not isinstance(X, np.ndarray)
            or X.dtype != self.input_dtype
            or X.shape[1:] != self._input_shape
            or not X.flags.c_contiguous
        ):
            trusted = False
        x = X if trusted else self.validate(X)
        y_arr = None if y is None else self.validate_outputs(y, len(x))
        classes_x, classes_y = self._compile_classes()
        parts = []
        for i in self._batches(len(x), batch_size):
            chunk = x[i : i + batch_size]
            out = classes_x(chunk) if y_arr is None else classes_y(y_arr[i : i + batch_size], chunk)
            parts.append([t.numpy() for t in out])
        if not parts:
            empty = np.empty(0, dtype=np.int32)
            return np.empty(0, dtype=np.float32), empty, empty.copy()
        if len(parts) == 1:
            score, top_y, top_d = parts[0]
        else:
            score, top_y, top_d = (np.concatenate(column) for column in zip(*parts, strict=True))
        return score.astype(np.float32, copy=False), top_y, top_d

    def _collect(
        self, parts: list[Any], return_predictions: bool, given_y: np.ndarray | None
    ) -> ScoreResult:
        if not parts:
            empty = np.empty((0, self._n_classes), dtype=np.float32)
            score = np.empty(0, dtype=np.float32)
            return (score, empty, empty.copy()) if return_predictions else score
        score = np.concatenate([p[0].numpy() for p in parts]).astype(np.float32, copy=False)
        if not return_predictions:
            return score
        y_d = np.concatenate([p[-1].numpy() for p in parts])
        y = given_y if given_y is not None else np.concatenate([p[1].numpy() for p in parts])
        return score, y, y_d

    def predict(
        self, X: Any, batch_size: int = DEFAULT_BATCH_SIZE, return_instance_score: bool = True
    ) -> dict[str, Any]:
        """Flag instances scoring above the threshold."""
        self._require_threshold()
        score = self.score(X, batch_size=batch_size)
        assert isinstance(score, np.ndarray)
        return self._prediction(score, return_instance_score)

    def predict_outputs(
        self,
        y: Any,
        X: Any,
        batch_size: int = DEFAULT_BATCH_SIZE,
        return_instance_score: bool = True,
    ) -> dict[str, Any]:
        """``predict`` with the classifier's outputs given (see ``score_outputs``)."""
        self._require_threshold()
        score = self.score_outputs(y, X, batch_size=batch_size)
        assert isinstance(score, np.ndarray)
        return self._prediction(score, return_instance_score)

    def _require_threshold(self) -> None:
        if self.threshold is None or not math.isfinite(self.threshold):
            raise DetectorError(
                "the detector has no threshold: call infer_threshold(X) or pass threshold="
            )

    def _prediction(self, score: np.ndarray, return_instance_score: bool) -> dict[str, Any]:
        assert self.threshold is not None
        return {
            "meta": dict(self.meta),
            "data": {
                "is_adversarial": (score > self.threshold).astype(np.int64),
                "instance_score": score if return_instance_score else None,
            },
        }

    def __repr__(self) -> str:
        return (
            f"ModelDistillation(threshold={self.threshold}, loss_type={self.loss_type!r}, "
            f"temperature={self.temperature}, input_shape={self._input_shape}, "
            f"n_classes={self._n_classes})"
        )


class _PreprocessedBatches(keras.utils.PyDataset):
    """Shuffled batches of ``preprocess_fn(x)`` with the classifier's outputs on them."""

    def __init__(
        self,
        x: np.ndarray,
        batch_size: int,
        preprocess_fn: Callable[[np.ndarray], Any],
        predict: Callable[[Any], tf.Tensor],
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.x = x
        self.batch_size = int(batch_size)
        self.preprocess_fn = preprocess_fn
        self.predict = predict
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = np.asarray(self.preprocess_fn(self.x[rows]), dtype=self.x.dtype)
        return batch, self.predict(batch).numpy()

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))
