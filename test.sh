#!/usr/bin/env bash
# Run the linters and the test suite (installs into .venv on first use). Arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
source "$root/scripts/venv.sh"
cd "$root"
.venv/bin/ruff check coordinator nodeagent console themes toolkit tests bench scripts
.venv/bin/mypy
exec .venv/bin/pytest "$@"
