#!/usr/bin/env bash
# Set up everything the tests need, then run the static checks and the whole test suite.
# Arguments go to pytest; --slow also runs the tests marked slow (the full producers matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
ruff check vhdtool tests benchmarks
mypy vhdtool
site=$(mktemp -d)
mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
