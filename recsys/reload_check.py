"""Loads an exported SavedModel in a fresh process (TensorFlow + ScaNN ops only) and answers one request.

``python -m recsys.reload_check MODEL_DIR REQUEST.json [SIGNATURE]`` prints the signature's
outputs as JSON. Used by ``recsys demo`` and the tests to prove an export is
self-contained: no project code, no TFRS, no TF-Transform import needed.
``python -m recsys.reload_check --stdin`` imports TensorFlow first, then reads those arguments as a
JSON list per line from stdin and prints one JSON line per model: the demo starts it before its exports
exist, so the import overlaps the exports.
"""
from __future__ import annotations

import json
import os
import sys


def answer(model_dir: str, request_path: str, signature: str = "serving_default") -> dict:
    """The signature's outputs for the request at ``request_path`` (JSON; model and request on any filesystem)."""
    import numpy as np
    import tensorflow as tf

    from recsys import fileio

    fn = tf.saved_model.load(model_dir).signatures[signature]
    request = fileio.read_json(request_path)
    inputs = {}
    for name, spec in fn.structured_input_signature[1].items():
        inputs[name] = tf.constant(np.array(request[name], dtype=object if spec.dtype == tf.string else None),
                                   dtype=spec.dtype)
    out = fn(**inputs)
    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])  # string outputs are UTF-8 bytes
    return {k: (decode(v.numpy()).tolist() if v.dtype == tf.string else v.numpy().tolist()) for k, v in out.items()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 and argv != ["--stdin"]:
        print(__doc__)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow  # noqa: F401  (first: with --stdin, while the parent works)

    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    if argv != ["--stdin"]:
        print(json.dumps(answer(*argv[:3])))
        return 0
    for line in sys.stdin:  # until the parent closes stdin (possibly before naming any model)
        if line.strip():
            print(json.dumps(answer(*[str(a) for a in json.loads(line)])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
