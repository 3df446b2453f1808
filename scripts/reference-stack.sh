#!/usr/bin/env bash
# Creates the Python reference stack (torch, transformers, peft, bitsandbytes; pinned in
# scripts/reference/requirements.txt) in .cache/refstack (git-ignored); says what it does on stdout.
# Idempotent: when every pinned package is installed at its pinned version it installs nothing.
# A fresh install is ~5.7 GB (PyPI's linux torch wheel is the CUDA build; it runs on CPU) and took
# ~2.5 min here. Used by scripts/reference/trajectory.py and scripts/bench-vs-bnb.sh.
# Usage: scripts/reference-stack.sh            (then: .cache/refstack/bin/python ...)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/refstack
req=scripts/reference/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv $venv"
    python3 -m venv "$venv"
fi
# every "name==version" line of the requirements must be installed at exactly that version
if ! "$venv/bin/python" - "$req" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            sys.exit(1)
PY
then
    echo "installing the reference stack into $venv: about 5.7 GB of downloads and disk"
    echo "(PyPI's linux torch wheel is the CUDA build with ~3 GB of nvidia-* wheels; it runs on CPU),"
    echo "this takes several minutes"
    start=$(date +%s)
    "$venv/bin/pip" install --quiet -r "$req"
    echo "installed in $(( $(date +%s) - start )) s; venv size $(du -sh "$venv" | cut -f1)"
else
    echo "reference stack already installed in $venv"
fi
echo "python: $venv/bin/python"
