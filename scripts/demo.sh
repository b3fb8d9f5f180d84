#!/usr/bin/env bash
# The main job, end to end, with no Azure account: install vhdtool (scripts/setup.sh), then run
# `vhdtool prepare` on the sample image set shipped in fixtures/sample/ (a generalized Linux OS disk
# as a dynamic VHDX, a data disk as a dynamic VHD): check each disk, convert it to a fixed VHD named
# by the capture convention, hash it in the same pass, upload it as a page blob to a local Azurite
# started here, and write the manifest. Then print the manifest and verify the blobs against it.
#
# Usage: bash scripts/demo.sh [OUTDIR]    (OUTDIR defaults to a new temporary folder, kept)
# Exits non-zero if any step fails. Azurite runs in memory on a free loopback port and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bash scripts/setup.sh
vhdtool=$repo/.venv/bin/vhdtool
python=$repo/.venv/bin/python

work=$(mktemp -d -t vhdtool-demo-XXXXXX)
out=${1:-$work/out}
azurite_pid=""
cleanup() {
  if [ -n "$azurite_pid" ]; then
    kill "$azurite_pid" 2>/dev/null || true
    wait "$azurite_pid" 2>/dev/null || true
  fi
  rm -rf "$work/src" "$work/azurite"
}
trap cleanup EXIT

echo "== unpacking the sample image set into $work/src"
mkdir -p "$work/src" "$work/azurite"
gzip -dc fixtures/sample/linux-os.vhdx.gz > "$work/src/linux-os.vhdx"
gzip -dc fixtures/sample/data.vhd.gz > "$work/src/data.vhd"

echo "== starting Azurite (blob service, in memory)"
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work/azurite" && exec "$repo/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent) > "$work/azurite.log" 2>&1 &
azurite_pid=$!
for _ in $(seq 1 150); do
  if "$python" -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  kill -0 "$azurite_pid" 2>/dev/null || { cat "$work/azurite.log" >&2; echo "Azurite did not start" >&2; exit 1; }
  sleep 0.2
done
# Azurite's well-known development account (documented, public; not a secret).
account_key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$account_key;BlobEndpoint=http://127.0.0.1:$port/devstoreaccount1;"
"$python" -c 'import os; from azure.storage.blob import BlobServiceClient as C
C.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"]).create_container("images")'

echo "== vhdtool prepare"
"$vhdtool" prepare --name sample --os "$work/src/linux-os.vhdx" --data "0=$work/src/data.vhd" \
    -o "$out" --expect generalized --upload images
manifest=$(ls -t "$out"/*.manifest.json | head -n 1)

echo
echo "== $manifest"
cat "$manifest"

echo
echo "== vhdtool verify (the blobs, read back and re-hashed)"
"$vhdtool" verify "$manifest" --dest images
echo
echo "The fixed VHDs and the manifest are in $out"
