"""The pure wire-tensor codecs (edge_agent.grpc.tensors) and the [grpc] config table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError, InvalidRequestError
from edge_agent.grpc import tensors
from edge_agent.grpc.protos import grpc_predict_v2_pb2 as v2
from edge_agent.grpc.protos import tensor_pb2, types_pb2

DT = types_pb2.DataType


def _proto(dtype: int, dims: list[int]) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype)  # type: ignore[arg-type]
    for d in dims:
        t.tensor_shape.dim.add().size = d
    return t


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<f2", "i1", "u1", "<i2", "<u2", "<i4",
                                   "<i8", "<u4", "<u8", "?"])
def test_tensor_content_round_trip_every_dtype(dtype: str) -> None:
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    t = tensor_pb2.TensorProto()
    tensors.to_tensor_proto(a, t)
    back = tensors.from_tensor_proto(t, "x", max_elements=1000)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)
    assert back.dtype == a.dtype


def test_typed_values_fill_and_half_bits() -> None:
    t = _proto(DT.Value("DT_FLOAT"), [2, 2])
    t.float_val.append(1.5)  # one value fills the shape, as in TensorFlow
    np.testing.assert_array_equal(tensors.from_tensor_proto(t, "x", max_elements=10),
                                  np.full((2, 2), 1.5, np.float32))
    h = _proto(DT.Value("DT_HALF"), [3])
    h.half_val.extend(np.array([0.5, -2, 3], np.float16).view(np.uint16).tolist())
    np.testing.assert_array_equal(tensors.from_tensor_proto(h, "x", max_elements=10),
                                  np.array([0.5, -2, 3], np.float16))


@pytest.mark.parametrize(("dims", "why"), [
    ([-1, 3], "negative size"), ([1] * 9, "rank 9 is over the limit"),
    ([1 << 20, 1 << 20], "over the limit of 1000 elements")])
def test_shapes_refused(dims: list[int], why: str) -> None:
    with pytest.raises(InvalidRequestError, match=why):
        tensors.from_tensor_proto(_proto(DT.Value("DT_FLOAT"), dims), "x", max_elements=1000)


def test_unknown_rank_refused() -> None:
    t = _proto(DT.Value("DT_FLOAT"), [])
    t.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidRequestError, match="unknown_rank"):
        tensors.from_tensor_proto(t, "x", max_elements=10)


def test_v2_raw_bytes_elements_are_length_prefixed() -> None:
    raw = b"".join(len(b).to_bytes(4, "little") + b for b in (b"ab", b"", b"xyz"))
    assert tensors.from_v2("BYTES", [3], None, raw, "x", max_elements=10) == [b"ab", b"", b"xyz"]
    with pytest.raises(InvalidRequestError, match="claims 99 bytes"):
        tensors.from_v2("BYTES", [1], None, (99).to_bytes(4, "little") + b"a", "x",
                        max_elements=10)


def test_v2_typed_and_fp16_raw_only() -> None:
    c = v2.InferTensorContents()
    c.uint_contents.extend([1, 2, 255])
    got = tensors.from_v2("UINT8", [3], c, None, "x", max_elements=10)
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and got.tolist() == [1, 2, 255]
    with pytest.raises(InvalidRequestError, match="FP16 has no typed contents"):
        tensors.from_v2("FP16", [1], c, None, "x", max_elements=10)


def test_grpc_config_defaults_and_token_from_http(tmp_path: Path) -> None:
    c = load_config(None, {"agent.store_dir": str(tmp_path)}, env={})
    g = c.grpc
    assert (g.enabled, g.host, g.port, g.max_message_bytes, g.workers) == (
        False, "127.0.0.1", 8500, 8 * 1024 * 1024, 8)
    c = load_config(None, {"agent.store_dir": str(tmp_path), "http.token": "t0k"}, env={})
    assert c.grpc.token == "t0k"
    assert c.redacted()["grpc"]["token"] == "***"


def test_grpc_tls_needs_cert_and_key(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"grpc.key_file: set both grpc.cert_file"):
        load_config(None, {"agent.store_dir": str(tmp_path), "grpc.cert_file": str(cert)},
                    env={})
    with pytest.raises(ConfigError, match=r"grpc.client_ca_file: mTLS needs TLS"):
        load_config(None, {"agent.store_dir": str(tmp_path),
                           "grpc.client_ca_file": str(cert)}, env={})
    with pytest.raises(ConfigError, match=r"grpc.port: expected int"):
        load_config(None, {"agent.store_dir": str(tmp_path), "grpc.port": 70000}, env={})
