#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned requirements; quiet when up to date.
# Usage: scripts/bootstrap.sh [requirements-file]
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$py" --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)-$(basename "$req")"
if [ ! -f "$stamp" ]; then
  echo "==> installing $req (first run takes a few minutes)"
  # The filter drops pip's notes about absent local package folders, not errors.
  .venv/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v "is ignored: it is neither" >&2)
  .venv/bin/python -m pip install --quiet -r "$req" 2> >(grep -v "is ignored: it is neither" >&2)
  touch "$stamp"
fi
