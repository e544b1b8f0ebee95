#!/usr/bin/env bash
# Create .venv (once) and install aidd into it, with the extras named as arguments: none for what running needs
# (run.sh), `dev` for the test tools too (test.sh). Either script reuses the venv the other made: what is there
# already is not installed again, an extra that is missing is added. Run or sourced; exits 1 if pip fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aidd needs Python >= 3.11")'
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
# One stamp per part installed (.installed: aidd itself, .installed-dev: its dev extra, ...); a part is
# installed again when pyproject.toml is newer than its stamp.
stamps=("$root/.venv/.installed")
for extra in "$@"; do stamps+=("$root/.venv/.installed-$extra"); done
missing=0
for stamp in "${stamps[@]}"; do
  if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then missing=1; fi
done
if [ "$missing" = 1 ]; then
  target="$root"
  if [ "$#" -gt 0 ]; then target="$root[$(IFS=,; echo "$*")]"; fi
  # pip's and the build backend's chatter goes to a log; the terminal gets one line, or the log's tail on failure.
  # The venv's own pip is recent enough (editable installs need pip >= 21.3): upgrading it costs seconds.
  log="$root/.venv/install.log"
  echo "aidd: installing into $root/.venv (first run: under a minute with a warm pip cache; log: $log)" >&2
  if ! "$root/.venv/bin/python" -m pip install --disable-pip-version-check -e "$target" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    echo "aidd: installing into .venv failed (whole log: $log)" >&2
    exit 1
  fi
  touch "${stamps[@]}"
fi
