#!/usr/bin/env bash
# Creates (or reuses) ./.venv with the pinned stack and the project installed in editable mode.
# Idempotent: re-installs only when setup.py or a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found %s" % sys.version' 
stamp=.venv/.installed-$(cat setup.py requirements/*.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "[bootstrap] installing pinned dependencies into .venv (first run takes a few minutes)..." >&2
.venv/bin/python -m pip install -q --upgrade pip==24.3.1 2>&1 | grep -v "is ignored" >&2 || true
.venv/bin/python -m pip install -q -c requirements/constraints.txt -c requirements/extras.txt -e '.[dev]' 2>&1 \
  | grep -v "is ignored" >&2 || true
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c 'import recsys, tensorflow_recommenders, scann, tensorflow_transform, apache_beam' 2>/dev/null \
  || { echo "[bootstrap] install failed" >&2; exit 1; }
rm -f .venv/.installed-*
touch "$stamp"
echo "[bootstrap] ready: .venv" >&2
