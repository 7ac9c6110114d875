import subprocess
import sys

import pytest

from recsys import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_step():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("demo", "data", "preprocess", "train", "evaluate", "export", "serve", "query", "bench"):
        assert cmd in out.stdout


def test_bad_override_is_one_clear_line_and_a_config_exit_code():
    out = run("--set", "train.nope=1", "preprocess")
    assert out.returncode == cli.EXIT_CONFIG == 3
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], "one line, no traceback"
    assert out.stderr.startswith("recsys: error: unknown config key 'train.nope'; known keys here:")


def test_data_synth_writes_raw_tables(tmp_path):
    out = run("--workdir", str(tmp_path), "--set", "data.n_users=20", "--set", "data.n_items=15", "data", "synth")
    assert out.returncode == 0, out.stderr
    assert "[data] synthetic" in out.stdout
    raw = tmp_path / "synthetic-u20-i15-s42" / "raw"
    assert (raw / "interactions.jsonl.gz").exists() and (raw / "items.jsonl").exists()


def _bad_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: [1\n")
    (tmp_path / "bad.json").write_text("{\"train\": ")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "typed.yaml").write_text("data:\n  n_users: many\n")


@pytest.mark.parametrize("args,code,message", [
    (["--set", "data.n_users=0", "data", "synth"], 3, "data.n_users=0 must be at least 1; e.g. --set data.n_users="),
    (["--set", "data.events_per_user=-1", "demo"], 3, "data.events_per_user=-1.0 must be greater than 0"),
    (["--set", "preprocess.eval_fraction=1.5", "preprocess"], 3, "must be a fraction in (0, 1)"),
    (["--set", "data.source=parquet", "demo"], 3, "data.source='parquet' is not one of synthetic, movielens, csv"),
    (["--workdir", "{tmp}/w", "data", "csv"], 4, "data.source=csv needs data.path"),
    (["--workdir", "{tmp}/w", "data", "csv", "--path", "{tmp}/nothing.csv"], 4, "does not exist"),
    (["--workdir", "{tmp}/w", "demo", "--data", "{tmp}"], 4, "holds no interaction log"),
    (["--set", "train.epochs", "train"], 3, "must look like section.key=value"),
    (["--set", "nope.x=1", "train"], 3, "unknown config section 'nope'"),
    (["--config", "{tmp}/bad.yaml", "demo"], 3, "is not valid YAML"),
    (["--config", "{tmp}/bad.json", "demo"], 3, "is not valid JSON"),
    (["--config", "{tmp}/list.yaml", "demo"], 3, "must hold a mapping of sections"),
    (["--config", "{tmp}/typed.yaml", "demo"], 3, "data.n_users='many' is not a valid int"),
    (["--config", "{tmp}/missing.yaml", "demo"], 3, "cannot read config file"),
    (["--workdir", "{tmp}/w", "preprocess"], 4, "write the raw data first (`recsys data synth`"),
    (["--workdir", "{tmp}/w", "train"], 4, "run `recsys preprocess` first"),
    (["--workdir", "{tmp}/w", "export"], 4, "run `recsys preprocess` first"),
    (["--workdir", "{tmp}/w", "tune"], 4, "run `recsys preprocess` first"),
    (["--workdir", "{tmp}/w", "tune", "--space", "data.n_users=10,20"], 3, "cannot change between trials"),
    (["--workdir", "{tmp}/w", "tune", "--metric", "mrr"], 3, "tune.metric='mrr' must be recall@K or ndcg@K"),
    (["--workdir", "{tmp}/w", "data", "movielens", "--path", "{tmp}/nothing"], 4, "is not a directory of MovieLens"),
])
def test_user_errors_print_one_line_with_the_fix(tmp_path, capsys, args, code, message):
    _bad_files(tmp_path)
    rc = cli.main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("recsys: error: ") and message in err, err


def test_verbose_adds_the_traceback(capsys):
    assert cli.main(["--verbose", "--set", "data.n_users=0", "demo"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("recsys: error: data.n_users=0")


def test_a_crash_is_exit_1_with_its_traceback(tmp_path, capsys, monkeypatch):
    from recsys import steps

    def broken(cfg):  # a fault inside a step (not a user error)
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(steps, "make_raw", broken)
    assert cli.main(["--workdir", str(tmp_path), "data", "synth"]) == cli.EXIT_CRASH == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "disk controller on fire" in err and "internal error (RuntimeError)" in err


def test_exit_codes_are_distinct():
    codes = [cli.EXIT_CRASH, cli.EXIT_USAGE, cli.EXIT_CONFIG, cli.EXIT_INPUT, cli.EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes) and 0 not in codes


def test_global_options_after_our_subcommand_move_in_front_of_it():
    assert cli._hoist_global_options(["data", "csv", "--path", "x.csv", "--set", "data.rating_max=10", "-v",
                                      "--workdir=w"]) == \
        ["--set", "data.rating_max=10", "-v", "--workdir=w", "data", "csv", "--path", "x.csv"]
    assert cli._hoist_global_options(["--set", "a=1", "demo", "--quick"]) == ["--set", "a=1", "demo", "--quick"]
    # serve, query and bench own their flags (`recsys bench quality --set ...` is the benchmark's own)
    for argv in (["bench", "quality", "--set", "a=1"], ["serve", "--port", "1"], ["query", "-v"]):
        assert cli._hoist_global_options(list(argv)) == argv


def test_library_warnings_stay_quiet_even_after_absl_resets_its_level():
    """TF-Transform's 'running in tf.compat.v1 mode' warning went through once absl's flags were parsed."""
    import logging

    from absl import logging as absl_logging

    from recsys import cli

    cli._quiet_python()
    absl_logging.set_verbosity(absl_logging.WARNING)  # what parsing absl's --verbosity flag does
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    logging.getLogger("absl").addHandler(handler)
    try:
        absl_logging.warning("library noise")
        absl_logging.error("a real error")
    finally:
        logging.getLogger("absl").removeHandler(handler)
    assert [r.getMessage() for r in records] == ["a real error"]
