#!/usr/bin/env bash
# Install what the tests need and run them: lint, then unit and integration tests.
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'

ruff check .
ruff format --check .
mypy dynostore tests bench scripts

status=0
python -m pytest "$@" || status=$?
# pytest exits 5 when it collected no tests: that is a failure here too.
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$status"
