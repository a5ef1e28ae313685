"""A one-line tqdm progress bar over training epochs (Keras prints one line per epoch)."""

from __future__ import annotations

from typing import Any

import keras
from tqdm import tqdm


class EpochProgress(keras.callbacks.Callback):
    """Advance a tqdm bar per epoch, showing the loss and any other epoch logs."""

    def __init__(self, epochs: int, description: str = "training") -> None:
        super().__init__()
        self.epochs = epochs
        self.description = description
        self.bar: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.bar = tqdm(total=self.epochs, desc=self.description, unit="epoch", leave=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.bar is None:
            return
        shown = {k: f"{v:.4f}" for k, v in (logs or {}).items() if isinstance(v, int | float)}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
