#!/usr/bin/env bash
# Create .venv (once) and install aidd with its test tools into it. Sourced by run.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aidd needs Python >= 3.11")'
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
stamp="$root/.venv/.installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  # pip's and the build backend's chatter goes to a log; the terminal gets one line, or the log's tail on failure.
  log="$root/.venv/install.log"
  echo "aidd: installing into $root/.venv (first run: a minute or two; log: $log)" >&2
  if ! { "$root/.venv/bin/python" -m pip install --upgrade pip &&
         "$root/.venv/bin/python" -m pip install -e "$root[dev]"; } >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    echo "aidd: installing into .venv failed (whole log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
