#!/usr/bin/env bash
# Run aidd on the embedded default (installs what running needs into .venv on first use). Arguments go to `aidd`.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
"$root/scripts/venv.sh"
exec "$root/.venv/bin/aidd" "$@"
