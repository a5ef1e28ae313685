"""fit trains only the distilled model; defaults, callbacks, preprocessing and stopping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def _detector(classifier: Any, distilled: Any, **kwargs: Any) -> Any:
    from monitor import ModelDistillation

    return ModelDistillation(threshold=1.0, distilled_model=distilled, model=classifier, **kwargs)


def _weights(model: Any) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("loss_type", ["kld", "xent"])
def test_fit_lowers_the_distillation_loss_and_leaves_the_classifier_alone(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any, loss_type: str
) -> None:
    det = _detector(tiny_classifier, fresh_distilled, loss_type=loss_type, temperature=0.5)
    x = tiny_data[0]
    before = float(np.mean(det.score(x)))
    classifier_weights = _weights(tiny_classifier)
    history = det.fit(x, epochs=8, batch_size=64, verbose=False)
    after = float(np.mean(det.score(x)))
    assert after < before * 0.8
    assert history.history["loss"][-1] < history.history["loss"][0]
    for old, new in zip(classifier_weights, _weights(tiny_classifier), strict=True):
        np.testing.assert_array_equal(old, new)


def test_training_loss_is_the_mean_score(
    tiny_classifier: Any, tiny_distilled: Any, tiny_data: Any
) -> None:
    from monitor.detector.losses import DistillationLoss

    det = _detector(tiny_classifier, tiny_distilled, loss_type="xent", temperature=2.0)
    x = tiny_data[0][:100]
    _, y, y_d = det.score(x, return_predictions=True)
    loss = float(DistillationLoss("xent", 2.0)(y, y_d))
    assert loss == pytest.approx(float(np.mean(det.score(x))), rel=1e-5)


@pytest.mark.parametrize(
    "optimizer", ["class", "instance"], ids=["optimizer-class", "optimizer-instance"]
)
def test_optimizer_may_be_a_class_or_an_instance(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any, optimizer: str
) -> None:
    import keras

    opt = keras.optimizers.SGD if optimizer == "class" else keras.optimizers.SGD(0.05)
    det = _detector(tiny_classifier, fresh_distilled)
    before = _weights(fresh_distilled)
    det.fit(tiny_data[0], optimizer=opt, epochs=1, verbose=False)
    assert any(
        not np.array_equal(a, b) for a, b in zip(before, _weights(fresh_distilled), strict=True)
    )


def test_custom_loss_fn_and_log_metric_are_used(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    import keras

    det = _detector(tiny_classifier, fresh_distilled)
    history = det.fit(
        tiny_data[0],
        loss_fn=keras.losses.KLDivergence(),
        epochs=2,
        verbose=False,
        log_metric=("agreement", keras.metrics.CategoricalAccuracy()),
    )
    assert set(history.history) == {"loss", "agreement"}


def test_preprocess_fn_is_applied_to_every_batch(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    seen: list[int] = []

    def preprocess(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        return batch * 0.0  # both models see only zeros

    det = _detector(tiny_classifier, fresh_distilled)
    x = tiny_data[0][:250]
    det.fit(x, epochs=2, batch_size=100, verbose=False, preprocess_fn=preprocess)
    # Keras may peek at a batch to learn the output signature; every epoch sees all rows.
    assert seen.count(50) == 2 and seen.count(100) >= 4


def test_agreement_stopping_stops_at_the_target(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    from monitor.detector.architectures import AgreementStopping

    det = _detector(tiny_classifier, fresh_distilled)
    x = tiny_data[0]
    reference = det.classifier_outputs(x[:100])
    stopper = AgreementStopping(x[:100], reference, target=0.9)
    history = det.fit(x[100:], epochs=200, batch_size=32, verbose=False, callbacks=[stopper])
    assert stopper.stopped_epoch is not None and stopper.stopped_epoch < 200
    assert len(history.history["loss"]) == stopper.stopped_epoch
    assert stopper.history[-1] >= 0.9 and all(a < 0.9 for a in stopper.history[:-1])
    _, y, y_d = det.score(x[:100], return_predictions=True)
    assert stopper.history[-1] == pytest.approx(np.mean(y.argmax(1) == y_d.argmax(1)))


def test_agreement_stopping_accepts_labels_and_checks_sizes() -> None:
    from monitor.detector.architectures import AgreementStopping

    stopper = AgreementStopping(np.zeros((3, 2)), np.array([0, 1, 1]))
    assert stopper.labels.tolist() == [0, 1, 1] and stopper.target == 0.95
    with pytest.raises(ValueError, match="same length"):
        AgreementStopping(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="target"):
        AgreementStopping(np.zeros((3, 2)), np.array([0, 1, 1]), target=1.5)


def test_fit_until_agreement_returns_unseen_holdout(
    tiny_classifier: Any, fresh_distilled: Any, tiny_data: Any
) -> None:
    from monitor.detector.architectures import fit_until_agreement

    det = _detector(tiny_classifier, fresh_distilled)
    x = tiny_data[0]
    holdout, stopper = fit_until_agreement(det, x, target=0.9, holdout_fraction=0.25, seed=3)
    assert len(holdout) == 150
    assert stopper is not None and stopper.stopped_epoch is not None
    assert stopper.history[-1] >= 0.9


class TestDefaultArchitecture:
    def test_flat_inputs_get_three_hidden_layers(self, tiny_classifier: Any) -> None:
        from monitor import ModelDistillation

        det = ModelDistillation(model=tiny_classifier, threshold=1.0)
        layers = [type(layer).__name__ for layer in det.distilled_model.layers]
        assert layers == ["InputLayer", "Flatten", "Dense", "Dense", "Dense", "Dense"]
        assert [layer.units for layer in det.distilled_model.layers[2:5]] == [32, 32, 32]
        assert det.distilled_model.output_shape == (None, 3)

    @pytest.mark.parametrize(
        ("shape", "conv"), [((16, 16, 3), True), ((20, 20), True), ((8, 8), False)]
    )
    def test_images_get_a_tiny_conv_stack(self, shape: tuple[int, ...], conv: bool) -> None:
        from monitor.detector.architectures import default_distilled_model

        model = default_distilled_model(shape, 4)
        names = [type(layer).__name__ for layer in model.layers]
        assert ("Conv2D" in names) is conv
        assert model.output_shape == (None, 4)
        out = np.asarray(model(np.random.default_rng(0).random((2, *shape), dtype=np.float32)))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
