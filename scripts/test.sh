#!/usr/bin/env bash
# The test command: set up .venv/ if needed, lint (ruff), then run the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check sgm_lightning tests scripts
exec .venv/bin/python -m pytest -q "$@"
