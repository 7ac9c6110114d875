"""`recsys query` (serving.client.main) against the local server over gRPC and REST, and `build_query_inputs`."""
import numpy as np

from preprocessing import schema
from serving.client import build_query_inputs, main


def test_query_prints_table_over_grpc_and_rest(server, capsys):
    assert main(["--user", "alice", "--model", "toy", "--k", "3", "--address", server.grpc_address]) == 0
    out = capsys.readouterr().out
    assert "model=toy version=1 user=alice" in out
    lines = out.strip().splitlines()
    assert lines[1].split() == ["rank", "item_id", "scores"]
    assert lines[2].split()[:2] == ["1", "alice-0"] and len(lines) == 5
    assert main(["--user", "bob", "--model", "toy", "--rest", server.rest_url]) == 0
    assert "bob-4" in capsys.readouterr().out


def test_query_ranking_signature_with_items(server, capsys):
    assert main(["--user", "u", "--model", "toy", "--signature", "rank", "--items", "a,bbb,cc",
                 "--address", server.grpc_address]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[2:]]
    assert [r[1] for r in rows] == ["bbb", "cc", "a"]  # sorted by score


def test_ranking_table_sorts_by_the_score_whatever_the_output_order():
    from serving.client import format_table

    result = {"rating": np.array([5.0, 1.0, 3.0], np.float32), "score": np.array([0.1, 0.9, 0.5], np.float32)}
    rows = format_table(result, 3, items=["a", "b", "c"])
    assert rows[0][:3] == ["rank", "item_id", "score"] and [r[1] for r in rows[1:]] == ["b", "c", "a"]
    assert rows[1][3] == "1.0000", "every float column to 4 decimals, like the score (--json keeps all digits)"
    ranks = format_table({"item_ids": np.array([[b"x", b"y"]], object), "scores": np.array([[0.5, 0.25]], np.float32),
                          "retrieval_ranks": np.array([[3, 1]], np.int32)}, 2)
    assert [r[3] for r in ranks[1:]] == ["3", "1"], "integers stay integers"


def test_query_errors_are_reported_not_raised(server, capsys):
    assert main(["--user", "u", "--model", "missing", "--address", server.grpc_address]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_build_query_inputs_from_schema_defaults():
    sig = {"inputs": {name: {"dtype": spec.dtype.name, "shape": [-1] + [d or -1 for d in spec.shape.as_list()[1:]]}
                      for name, spec in schema.serving_signature([schema.USER, schema.CONTEXT, schema.HISTORY]).items()}}
    sig["inputs"]["k"] = {"dtype": "int32", "shape": []}
    inputs = build_query_inputs(sig, "u7", k=4, timestamp=1000, history=["i1", "i2"])
    assert inputs["user_id"].tolist() == [b"u7"] and inputs["timestamp"].dtype == np.int64
    assert inputs["history_item_ids"].shape == (1, schema.HISTORY_LENGTH)
    assert inputs["history_item_ids"][0, -2:].tolist() == [b"i1", b"i2"] and inputs["history_item_ids"][0, 0] == b""
    assert inputs["history_ts"][0, -1] == 940 and inputs["history_ts"][0, 0] == 0
    assert inputs["user_country"].tolist() == [b"unknown"] and inputs["user_signup_ts"].tolist() == [0]
    assert inputs["k"].shape == () and inputs["k"].dtype == np.int32 and int(inputs["k"]) == 4


def test_build_ranking_inputs_one_row_per_candidate_or_the_query_once():
    sig = {"inputs": {name: {"dtype": spec.dtype.name, "shape": [-1] + [d or -1 for d in spec.shape.as_list()[1:]]}
                      for name, spec in schema.serving_signature(schema.RANKING_ROLES).items()}}
    rows = build_query_inputs(sig, "u7", timestamp=1000, history=["i1"], items=["a", "b", "c"])
    once = build_query_inputs(sig, "u7", timestamp=1000, history=["i1"], items=["a", "b", "c"], query_once=True)
    assert {k: v.shape[0] for k, v in rows.items()} == {k: 3 for k in rows}
    assert {k for k, v in once.items() if v.shape[0] == 1} == set(schema.QUERY_FEATURES)
    assert {k for k, v in once.items() if v.shape[0] == 3} == set(rows) - set(schema.QUERY_FEATURES)
    for k, v in once.items():
        np.testing.assert_array_equal(np.broadcast_to(v, rows[k].shape), rows[k])


def test_query_ranking_gets_candidates_from_retrieval(server, capsys):
    assert main(["--user", "u", "--model", "toy", "--signature", "rank", "--candidates_model", "toy",
                 "--num_candidates", "3", "--address", server.grpc_address]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[2:]]
    assert sorted(r[1] for r in rows) == ["u-0", "u-1", "u-2"]


def test_query_command_sends_exactly_the_request_it_was_built_from():
    """The demo prints this line so the served model can be asked what it answered in-process: parsed by the
    client's own parser and filled by build_query_inputs, it gives back every array of the request."""
    import shlex

    from serving.client import build_parser, query_command

    width = 5
    request = {
        "user_id": np.array(["usér 7"], object),
        "timestamp": np.array([1498029445], np.int64),
        "device": np.array(["tablet"], object),            # not the schema default: sent
        "user_country": np.array(["unknown"], object),     # the default: left to the client
        "history_item_ids": np.array([["", "", "m1", "Amélie", "m3"]], object),
        "history_ts": np.array([[0, 0, 1489536946, 1489536951, 1489548480]], np.int64),
        "history_ratings": np.array([[0.0, 0.0, 3.5, 0.30000001192092896, 4.0]], np.float32),
    }
    line = query_command("recommend", request)
    assert "--feature user_country" not in line and "--feature device=tablet" in line
    argv = shlex.split(line)
    assert argv[:4] == ["recsys", "query", "--model", "recommend"]
    args = build_parser().parse_args(argv[2:])
    dtypes = {np.dtype(object): "string", np.dtype(np.int64): "int64", np.dtype(np.float32): "float32"}  # as TF names them
    sig = {"inputs": {n: {"dtype": dtypes[a.dtype], "shape": [-1] + ([width] if a.ndim == 2 else [])}
                      for n, a in request.items()}}
    got = build_query_inputs(sig, args.user, timestamp=args.timestamp,
                             history=[h for h in args.history.split(",") if h],
                             features=dict(f.split("=", 1) for f in args.feature))
    assert set(got) == set(request)
    for name, want in request.items():
        have = got[name]
        if want.dtype == object:
            have = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(have)
        np.testing.assert_array_equal(have, want, err_msg=name)
        assert have.dtype == want.dtype or want.dtype == object, name
    assert query_command("m", {**request, "history_item_ids": np.array([["", "", "a,b", "c", "d"]], object)}) is None
