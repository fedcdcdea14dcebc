#!/usr/bin/env bash
# Regenerate edge_agent/grpc/protos/*_pb2.py and *_pb2_grpc.py from the vendored .proto files.
#
# The generated code is committed (boards never run protoc). It is generated with a pinned,
# old grpcio-tools in a throw-away venv so that its runtime-version guards stay low:
#   protobuf gencode 5.27.2 → the agent needs protobuf >= 5.27.2 (any later 5.x/6.x/7.x runs it)
#   grpcio 1.66.2           → the agent needs grpcio >= 1.66.2 (checked by *_pb2_grpc.py)
# Every message is registered in a private descriptor pool (protos/_pool.py), never the
# default one: TensorFlow and tritonclient register the same full names (tensorflow.TensorProto,
# inference.ModelInferRequest), and one process may import both.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_VERSION=1.66.2
VENV=${GEN_GRPC_VENV:-$(mktemp -d)/venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "grpcio-tools==$TOOLS_VERSION"
fi
OUT=edge_agent/grpc/protos
rm -f "$OUT"/*_pb2.py "$OUT"/*_pb2_grpc.py "$OUT"/*_pb2.pyi
"$VENV/bin/python" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
  "$OUT"/*.proto
# the private pool instead of the default one
for f in "$OUT"/*_pb2.py; do
  sed -i -e 's/^from google.protobuf import descriptor_pool as _descriptor_pool$/from edge_agent.grpc.protos import _pool/' \
         -e 's/_descriptor_pool\.Default()\.AddSerializedFile(/_pool.POOL.AddSerializedFile(/' "$f"
  grep -q '_pool.POOL.AddSerializedFile' "$f" || { echo "gen_grpc: $f not rewritten" >&2; exit 1; }
done
# only the services' files: drop the empty *_pb2_grpc.py of message-only protos
for f in "$OUT"/*_pb2_grpc.py; do
  grep -q 'class .*Servicer' "$f" || rm -f "$f"
done
echo "generated: $(ls "$OUT"/*_pb2*.py* | xargs -n1 basename | tr '\n' ' ')"
