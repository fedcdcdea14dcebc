"""The descriptor pool of the agent's vendored protos (private, never the default pool).

TensorFlow (``tensorflow.TensorProto`` …) and tritonclient (``inference.ModelInferRequest``
…) register the same full names in protobuf's default pool; the agent's copies live here so
that one process can import any of them together. Type URLs (``Any.Pack``) depend only on
the full names, so the wire format is the same. The generated ``*_pb2.py`` (see
``scripts/gen_grpc.sh``) add their files to :data:`POOL`.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _wkt in (any_pb2, wrappers_pb2):  # the well-known types the vendored protos import
    POOL.AddSerializedFile(_wkt.DESCRIPTOR.serialized_pb)
