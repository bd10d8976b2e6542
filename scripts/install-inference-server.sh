#!/usr/bin/env bash
# Test peer for the HTTP inference client, installed from PyPI into .cache/ (gitignored), never
# into radpath's own environment:
#   .cache/inference-server/   a virtualenv with Seldon MLServer (PyPI: mlserver), a real KServe /
#                              Open Inference Protocol v2 server, plus onnxruntime and numpy for the
#                              custom runtime in tests/inference_runtime.py
# Idempotent: does nothing when it is present. Called by tests/inference_server.py and make test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
server_venv="$root/.cache/inference-server"
MLSERVER_VERSION="${MLSERVER_VERSION:-1.7.1}"
ONNXRUNTIME_VERSION="${ONNXRUNTIME_VERSION:-1.32.0}"
NUMPY_VERSION="${NUMPY_VERSION:-2.4.6}"
python="${PYTHON:-python3}"

if [ ! -x "$server_venv/bin/mlserver" ]; then
  echo "installing mlserver $MLSERVER_VERSION (onnxruntime $ONNXRUNTIME_VERSION) into $server_venv"
  rm -rf "$server_venv"  # a half-built one from an interrupted run
  "$python" -m venv "$server_venv"
  "$server_venv/bin/pip" install -q --disable-pip-version-check \
    "mlserver==$MLSERVER_VERSION" "onnxruntime==$ONNXRUNTIME_VERSION" "numpy==$NUMPY_VERSION"
fi
