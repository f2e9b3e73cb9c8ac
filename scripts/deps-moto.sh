#!/usr/bin/env bash
# The S3 tests (tests/e2e/s3_test.py, bench/s3_read.sh) run moto's server with
# tests/servers/moto_harness.py. moto, Flask and boto3 live only in the machine's
# pyenv Python (`python3` on PATH, not /usr/bin/python3; DESIGN.md §5). This checks
# they are importable and fails naming what to do; it installs nothing.
set -euo pipefail
py=$(command -v python3 || true)
if [ -z "$py" ]; then
  echo "deps-moto.sh: python3 is not on PATH; the S3 tests need the pyenv Python with moto" >&2
  exit 1
fi
if ! out=$("$py" -c 'import moto, flask, boto3, werkzeug; print(moto.__version__)' 2>&1); then
  echo "deps-moto.sh: $py cannot import moto, flask, boto3 and werkzeug:" >&2
  echo "  ${out##*$'\n'}" >&2
  echo "  The S3 tests need them in the Python that runs the tests (CMake's Python3, the" >&2
  echo "  pyenv python3 on PATH): put pyenv's shims first on PATH, or install them into it:" >&2
  echo "  $py -m pip install 'moto[server]' boto3" >&2
  exit 1
fi
echo "deps-moto.sh: moto $out in $py"
