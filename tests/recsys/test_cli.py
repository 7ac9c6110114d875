import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_step():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("demo", "data", "preprocess", "train", "evaluate", "export", "serve", "query", "bench"):
        assert cmd in out.stdout


def test_bad_override_is_a_clear_error():
    out = run("--set", "train.nope=1", "preprocess")
    assert out.returncode != 0 and "unknown config key" in out.stderr


def test_data_synth_writes_raw_tables(tmp_path):
    out = run("--workdir", str(tmp_path), "--set", "data.n_users=20", "--set", "data.n_items=15", "data", "synth")
    assert out.returncode == 0, out.stderr
    assert "[data] synthetic" in out.stdout
    raw = tmp_path / "synthetic-u20-i15-s42" / "raw"
    assert (raw / "interactions.jsonl.gz").exists() and (raw / "items.jsonl").exists()
