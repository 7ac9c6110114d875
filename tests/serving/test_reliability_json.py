"""serving/json_codec.py: the bounded-memory REST parser agrees with json.loads and refuses what it must."""
import base64
import json

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2 as T

from serving import json_codec as jc
from serving.errors import ServingError

SIG = {"ids": (T.DT_STRING, (-1, 3)), "ts": (T.DT_INT64, (-1, 3)), "x": (T.DT_FLOAT, (-1, 2)),
       "flag": (T.DT_BOOL, (-1,))}


def parse(obj_or_bytes, sig=SIG, **kw):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return jc.parse_predict(body, lambda name: sig, **kw)


def rows(n):
    return [{"ids": [f"i{r}", "é\"q", ""], "ts": [r, -r, 2**40], "x": [0.5 * r, -1e-3], "flag": r % 2 == 0}
            for r in range(n)]


def test_fast_and_per_value_paths_agree_with_json_loads():
    data = rows(2500)  # > 2 chunks of the json.loads fast path
    fmt, _, fast = parse({"instances": data})
    # a b64 value in every row defeats the fast path: the per-value parser handles the same numbers
    slow_rows = [dict(r, ids=[{"b64": base64.b64encode(r["ids"][0].encode()).decode()}] + r["ids"][1:]) for r in data]
    _, _, slow = parse({"instances": slow_rows})
    _, _, cols = parse({"inputs": {k: [r[k] for r in data] for k in SIG}})
    assert fmt == "row"
    for out in (fast, slow, cols):
        assert out["ids"].shape == (2500, 3) and out["ids"][7].tolist() == [b"i7", "é\"q".encode(), b""]
        np.testing.assert_array_equal(out["ts"], np.array([r["ts"] for r in data], np.int64))
        np.testing.assert_array_equal(out["x"], np.array([r["x"] for r in data], np.float32))
        np.testing.assert_array_equal(out["flag"], np.array([r["flag"] for r in data]))


def test_strings_are_compact_but_a_long_one_does_not_blow_up_the_width():
    _, _, out = parse({"inputs": {"ids": [["a", "b", "c"]] * 1000, "ts": [[1, 2, 3]] * 1000,
                                  "x": [[0, 0]] * 1000, "flag": [True] * 1000}})
    assert out["ids"].dtype == np.dtype("S1") and out["ids"].nbytes == 3000
    long_one = [["a", "b", "c"]] * 999 + [["x" * 100000, "b", "c"]]
    _, _, out = parse({"inputs": {"ids": long_one, "ts": [[1, 2, 3]] * 1000, "x": [[0, 0]] * 1000,
                                  "flag": [True] * 1000}})
    assert out["ids"].dtype == object and out["ids"][999, 0] == b"x" * 100000  # not 3000 x 100 KB fixed width
    _, _, out = parse({"inputs": {"ids": [[{"b64": "AAA="}, "b", "c"]], "ts": [[1, 2, 3]], "x": [[0, 0]],
                                  "flag": [True]}})
    assert out["ids"][0, 0] == b"\x00\x00"  # a trailing NUL survives (object array, not 'S')


@pytest.mark.parametrize("body, fragment", [
    ({"instances": [{"ids": ["a", "b", "c"], "ts": [1, 2, 3.5], "x": [0, 0], "flag": True}]}, "expected type: int64"),
    ({"instances": [{"ids": ["a", "b", 3], "ts": [1, 2, 3], "x": [0, 0], "flag": True}]}, "expected type: string"),
    ({"instances": [{"ids": ["a", "b", "c"], "ts": [1, 2, 3], "x": [0, 0], "flag": 1}]}, "expected type: bool"),
    ({"instances": [{"ids": ["a", "b", "c"], "ts": [1, 2, True], "x": [0, 0], "flag": True}]}, "expected type: int64"),
    ({"instances": [{"ids": ["a", "b"], "ts": [1, 2, 3], "x": [0, 0], "flag": True},
                    {"ids": ["a", "b", "c"], "ts": [1, 2, 3], "x": [0, 0], "flag": True}]}, "ragged"),
    ({"instances": [{"ids": ["a", "b", "c"], "ts": [1, 2, 3], "x": [0, 1e39], "flag": True}]}, "out of range"),
    ({"inputs": {"ids": [["a", "b", "c"]] * 2, "ts": [[1, 2, 3]] * 3, "x": [[0, 0]] * 2, "flag": [True] * 2}},
     "more than 2 rows"),
])
def test_type_shape_and_range_errors(body, fragment):
    with pytest.raises(ServingError) as e:
        parse(body)
    assert e.value.code_name == "INVALID_ARGUMENT" and fragment in e.value.message


def test_one_row_beside_many_is_left_to_the_graph():
    """A one-row input is for every row (a ranker's query features once for all candidates): parsed whichever
    input comes first, as TF Serving leaves shapes to the graph."""
    for inputs in ({"ids": [["a", "b", "c"]], "ts": [[1, 2, 3]] * 3, "x": [[0, 0]] * 3, "flag": [True]},
                   {"ts": [[1, 2, 3]] * 3, "ids": [["a", "b", "c"]], "x": [[0, 0]] * 3, "flag": [True] * 3}):
        _, _, arrays = parse({"inputs": inputs})
        assert {k: a.shape[0] for k, a in arrays.items()} == {k: len(v) for k, v in inputs.items()}


def test_value_cap_is_resource_exhausted_and_stops_early():
    with pytest.raises(ServingError) as e:
        parse({"inputs": {"ts": [[1, 2, 3]] * 100}}, max_values=50)
    assert e.value.code_name == "RESOURCE_EXHAUSTED" and "more than 50 values" in e.value.message


def test_classify_regress_examples_are_parsed_a_chunk_at_a_time():
    examples = [{"x": float(i), "tags": ["a", "b"]} for i in range(2500)]
    examples[1700] = {"x": 1700.0, "tags": [{"b64": base64.b64encode(b"\xff").decode()}]}  # per-example path
    body = json.dumps({"examples": examples, "context": {"c": 1}, "signature_name": "regress"}).encode()
    name, context, chunks = jc.parse_examples(body)
    chunks = list(chunks)
    assert name == "regress" and context == {"c": 1}
    assert len(chunks) > 2 and max(len(c) for c in chunks) <= 1024           # never the whole list at once
    flat = [e for c in chunks for e in c]
    assert len(flat) == 2500 and flat[1699]["x"] == 1699.0 and "b64" in flat[1700]["tags"][0]
    with pytest.raises(ServingError) as e:
        list(jc.parse_examples(b'{"examples": ' + b"[" * 10000 + b"]" * 10000 + b"}")[2])
    assert "nesting deeper" in e.value.message
    with pytest.raises(ServingError):
        jc.parse_examples(b'{"examples": {"x": 1}}')
