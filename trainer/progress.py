"""One progress line per epoch for every Keras fit in the project (Keras' bar floods non-interactive logs)."""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional

import tensorflow as tf


class EpochProgress(tf.keras.callbacks.Callback):
    """Prints ``[tag] epoch i/n  <this epoch>s (total <t>s) {metrics}``: per-epoch time, not cumulative."""

    def __init__(self, tag: str, epochs: int, keep: Optional[Callable[[str], bool]] = None,
                 rename: Optional[Callable[[str], str]] = None):
        super().__init__()
        self.tag, self.epochs = tag, epochs
        self.keep = keep or (lambda k: k in ("loss", "val_loss"))
        self.rename = rename or (lambda k: k)
        self.t0 = self.t_epoch = time.time()

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.t_epoch = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        shown: Dict[str, float] = {self.rename(k): round(float(v), 4) for k, v in (logs or {}).items() if self.keep(k)}
        print(f"[{self.tag}] epoch {epoch + 1}/{self.epochs} {now - self.t_epoch:6.1f}s "
              f"(total {now - self.t0:.0f}s) {shown}", flush=True)
