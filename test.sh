#!/usr/bin/env bash
# Run the linters and the test suite (installs aidd and its test tools, the dev extra, into .venv on first use).
# Arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
"$root/scripts/venv.sh" dev
cd "$root"
.venv/bin/ruff check aiddclient coordinator nodeagent console themes toolkit tests bench scripts
.venv/bin/mypy
exec .venv/bin/pytest "$@"
