"""The module entry points start as quietly as ``recsys``: no CUDA-plugin or Python-version noise."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_server_help_prints_nothing_on_stderr_without_any_log_setting():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    out = subprocess.run([sys.executable, "-m", "serving.server", "--help"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--model_config_file" in out.stdout
    assert out.stderr == "", out.stderr  # TensorFlow was imported: its start-up lines would be here
