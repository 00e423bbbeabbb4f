#!/usr/bin/env bash
# The README's test command: install the test requirements (CPU torch), fetch the real
# base tokenizer the tests compare against, run the suite. Works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -r requirements-test.txt
bash scripts/fetch_base_tokenizer.sh
python -m pytest -q tests "$@"
