"""Formats one layer writes and another reads: the seams between trainer, serving and the feedback loop.

Each module here is the one definition of a file or record layout, so the writer and the reader
share it without importing each other: ``completion`` (a model version's "all my files are here"
marker: written by the trainer, checked by the server), ``warmup`` (TF Serving's warmup records,
written at export, replayed at load) and ``prediction_log`` (request-log records: written by the
server, read back by the feedback loop). Nothing here imports ``preprocessing``, ``trainer`` or
``serving`` (tests/test_layers.py checks it).
"""
import tfenv  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
