"""Loads an exported SavedModel in a fresh process (TensorFlow + ScaNN ops only) and answers one request.

``python -m recsys.reload_check MODEL_DIR REQUEST.json [SIGNATURE]`` prints the signature's
outputs as JSON. Used by ``recsys demo`` and the tests to prove an export is
self-contained: no project code, no TFRS, no TF-Transform import needed.
``python -m recsys.reload_check --stdin`` imports TensorFlow first, then reads those arguments as one
JSON list from stdin: the demo starts it before its exports exist, so the import overlaps the exports.
"""
from __future__ import annotations

import json
import os
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 and argv != ["--stdin"]:
        print(__doc__)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from recsys.scann_ops import load_scann_ops

    load_scann_ops()
    if argv == ["--stdin"]:
        line = sys.stdin.readline()
        if not line.strip():  # the parent went away (or changed its mind) before any export existed
            return 0
        argv = [str(a) for a in json.loads(line)]
    model = tf.saved_model.load(argv[0])
    signature = argv[2] if len(argv) > 2 else "serving_default"
    fn = model.signatures[signature]
    from recsys import fileio

    request = fileio.read_json(argv[1])   # the model and the request may be on any filesystem (gs://, ...)
    inputs = {}
    for name, spec in fn.structured_input_signature[1].items():
        inputs[name] = tf.constant(np.array(request[name], dtype=object if spec.dtype == tf.string else None),
                                   dtype=spec.dtype)
    out = fn(**inputs)
    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])  # string outputs are UTF-8 bytes
    result = {k: (decode(v.numpy()).tolist() if v.dtype == tf.string else v.numpy().tolist())
              for k, v in out.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
