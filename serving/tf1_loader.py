"""Session-based loading of SavedModels, the way TF Serving's SavedModelBundle loads them.

A TF1 SavedModel (``SavedModelBuilder``, no object graph) is a graph plus signatures that
name tensors in it. ``tf.saved_model.load`` turns each signature into a pruned function,
which fails for graphs TF Serving serves every day: reference-typed variables (``counter``)
and signatures whose declared shapes don't match their ops (``ParseExample`` behind
a Classify/Regress signature). Here the graph is loaded into its own ``tf.compat.v1.Session``
(restoring variables, running the main/init op, wiring assets) and each call runs the
session through a cached ``Session`` callable: feeds and fetches are the signature's tensor
names, nothing checks shapes in Python, and TensorFlow itself reports what does not fit,
as in TF Serving. TF Serving loads TF2 SavedModels the same way (their MetaGraph names
the signature tensors too), and so does this server by default: a Session callable costs
a fraction of a tf.function call's Python binding per request.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.util import deprecation

# TF Serving builds the session's ConfigProto from its thread flags; the server sets these
# before loading (process-wide, like the flags). intra_op 0 = TensorFlow's default; inter_op 0 =
# each request runs its graph in its own (caller) thread, N > 0 = a pool of N threads.
SESSION_THREADS = {"intra_op": 0, "inter_op": 0}


def tf2_loader() -> str:
    """How TF2 SavedModels load: "session" (default, TF Serving's way and the fastest per call) or
    "function" (``tf.saved_model.load`` and the signature functions), from RECSYS_TF2_LOADER."""
    value = os.environ.get("RECSYS_TF2_LOADER", "session").strip().lower() or "session"
    if value not in ("session", "function"):
        raise ValueError(f"RECSYS_TF2_LOADER must be 'session' or 'function', got {value!r}")
    return value


def is_tf1_saved_model(meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
    """True for SavedModelBuilder exports: they carry no object graph (TF2 ``tf.saved_model.save`` does)."""
    return len(meta_graph.object_graph_def.nodes) == 0


def session_config() -> config_pb2.ConfigProto:
    config = config_pb2.ConfigProto()
    if SESSION_THREADS["intra_op"]:
        config.intra_op_parallelism_threads = int(SESSION_THREADS["intra_op"])
    if SESSION_THREADS["inter_op"]:
        config.inter_op_parallelism_threads = int(SESSION_THREADS["inter_op"])
    return config


class SessionBundle:
    """A TF1 SavedModel loaded into its own graph and session (thread safe: Session.run is)."""

    def __init__(self, path: str, tags: Sequence[str]):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config())
        try:
            with self.graph.as_default():
                with deprecation.silence():  # TF Serving's loader, on purpose: not a call to migrate
                    self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), path)
        except BaseException:
            self.session.close()
            raise
        self._callables: Dict[Tuple[Tuple[str, ...], Tuple[str, ...]], object] = {}
        self._lock = threading.Lock()

    def _callable(self, feeds: Tuple[str, ...], fetches: Tuple[str, ...]):
        key = (feeds, fetches)
        fn = self._callables.get(key)
        if fn is None:
            with self._lock:
                fn = self._callables.get(key)
                if fn is None:
                    options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
                    if not SESSION_THREADS["inter_op"]:
                        # run the graph in the calling (gRPC worker) thread: no hand-off to the
                        # inter-op pool and back, which on a busy 2-core host cost more than small
                        # graphs take to run (retrieval p50 1.7 vs 5.7 ms in-process under load)
                        options.run_options.inter_op_thread_pool = -1
                    fn = self.session._make_callable_from_options(options)  # noqa: SLF001 (public API has no options form)
                    self._callables[key] = fn
        return fn

    def run(self, feeds: Dict[str, np.ndarray], fetches: Sequence[str]) -> list:
        """Runs the graph: ``feeds`` maps tensor names to arrays, ``fetches`` are tensor names."""
        names = tuple(feeds)
        return self._callable(names, tuple(fetches))(*[feeds[n] for n in names])

    def close(self) -> None:
        self._callables.clear()
        self.session.close()


def signature_runner(bundle: SessionBundle, sig_def: meta_graph_pb2.SignatureDef):
    """``run(inputs by alias, output aliases or None) -> outputs by alias`` for one SignatureDef."""
    in_names = {alias: info.name for alias, info in sig_def.inputs.items()}
    out_names = {alias: info.name for alias, info in sig_def.outputs.items()}
    all_outputs = tuple(sorted(out_names))

    def run(inputs: Dict[str, np.ndarray], outputs: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        wanted = tuple(outputs) if outputs else all_outputs
        feeds = {in_names[k]: inputs[k] for k in sorted(inputs)}
        values = bundle.run(feeds, [out_names[a] for a in wanted])
        return {a: np.asarray(v) for a, v in zip(wanted, values)}

    return run
