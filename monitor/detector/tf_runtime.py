"""Quiet, explicitly threaded TensorFlow start-up for the CLI commands.

Library users import TensorFlow themselves and keep its defaults; commands call
``start_tensorflow()`` so that TensorFlow's C++ start-up chatter (CUDA probing, oneDNN
notices, written before its log level applies) stays out of the user's terminal, and so
that the thread pools are sized on purpose. The chatter is captured and shown only if
the import fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from monitor.cpus import available_cpus


@contextlib.contextmanager
def _stderr_captured() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file; replay it if the block raises."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or no real stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def start_tensorflow(intra_op_threads: int | None = None, inter_op_threads: int = 1) -> Any:
    """Import TensorFlow quietly, size its thread pools, and return the module.

    Defaults suit small models on a few cores: intra-op threads = every CPU this process
    may use (its container's CPU quota included), one inter-op thread (the graphs are chains of ops; more inter-op threads oversubscribe).
    Thread settings are ignored once TensorFlow has already started executing.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_captured():
        import tensorflow as tf

        with contextlib.suppress(RuntimeError):  # already initialised: keep what is there
            tf.config.threading.set_intra_op_parallelism_threads(
                intra_op_threads or available_cpus()
            )
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        tf.config.list_logical_devices("CPU")  # device set-up (and its CUDA probe) happens here
        import keras  # noqa: F401  (its import is slow too; keep it inside the quiet window)
    return tf
