#!/usr/bin/env bash
# Set up everything the tests need, then run the static checks and the whole test suite.
# Usage: scripts/test.sh [--fast | --slow] [pytest arguments...]
#   (default)  the CI run: everything but the widened generated matrices (marker "wide")
#   --fast     the inner loop: also leaves out the tests marked "slow" (setup is skipped when done once)
#   --slow     everything, the widened matrices included
# Skips fail the run (CI=true unless set otherwise): see ALLOWED_SKIPS in tests/conftest.py.
# The tests run on every core (pytest-xdist; TEST_WORKERS=N to choose, TEST_WORKERS=0 for one process).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=default
case "${1:-}" in
  --fast) mode=fast; shift ;;
  --slow) mode=slow; shift ;;
esac
if [ "$mode" = fast ] && [ -x .venv/bin/python ] && [ -x node_modules/.bin/azurite-blob ]; then
  :  # already set up: the inner loop skips the installer
else
  bash scripts/setup.sh --test
fi
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
export CI="${CI:-true}"
ruff check vhdtool tests benchmarks
mypy vhdtool
if [ "$mode" != fast ]; then
  site=$(mktemp -d)
  mkdocs build --strict --quiet --site-dir "$site"
  rm -rf "$site"
fi
case "$mode" in
  fast) marks=(-m "not slow and not wide") ;;
  slow) marks=() ;;
  *) marks=(-m "not wide") ;;
esac
set +e
python -m pytest -q -p no:cacheprovider -rs -n "${TEST_WORKERS:-auto}" --dist worksteal "${marks[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
