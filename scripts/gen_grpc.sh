#!/usr/bin/env bash
# Regenerate runtime/grpc/edge_inference_pb2.py and .pyi from runtime/grpc/edge_inference.proto (dev time only:
# the runtime imports the committed files and never needs protoc). grpcio-tools is pinned so the generated code, and the
# protobuf runtime versions it accepts (see the `grpc` extra in pyproject.toml), change only on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m pip install --quiet --target "$tools" 'grpcio-tools==1.81.1'
PYTHONPATH="$tools" python3 -m grpc_tools.protoc -I runtime/grpc \
    --python_out=runtime/grpc --pyi_out=runtime/grpc runtime/grpc/edge_inference.proto
echo "regenerated runtime/grpc/edge_inference_pb2.py and edge_inference_pb2.pyi"
