"""gRPC serving driven by the official clients against a real ``edge-agent run``.

TensorFlow Serving's ``tensorflow-serving-api`` (PredictionServiceStub, ModelServiceStub)
and Triton's ``tritonclient[grpc]`` (InferenceServerClient, and its generated stub for
typed contents), on a single-output model (digits) and a multi-output one (two_heads):
raw ``tensor_content`` / ``raw_input_contents`` and typed values, images as DT_STRING,
classify, metadata, status, version labels. Every answer is checked against the same
request over REST: one path inside.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_helpers import GrpcAgent, grpc_agent

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving")
tc = pytest.importorskip("tritonclient.grpc")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402


@pytest.fixture(scope="module")
def agent(digits: Any, two_heads: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[GrpcAgent]:
    with grpc_agent(tmp_path_factory.mktemp("grpc"), digits.bundle,
                    extra_models=(two_heads.bundle,)) as a:
        yield a


@pytest.fixture(scope="module")
def channel(agent: GrpcAgent) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(agent.grpc) as ch:
        yield ch


@pytest.fixture(scope="module")
def tfs(channel: grpc.Channel) -> Any:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict(name: str, inputs: dict[str, Any], *, version: int | None = None,
             label: str | None = None, output_filter: tuple[str, ...] = ()) -> Any:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(v)
    req.output_filter.extend(output_filter)
    return req


def _rest_predictions(agent: GrpcAgent, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    doc = agent.rest(f"/v1/models/{model}:predict", {"inputs": x.tolist()})
    out = doc["outputs"]
    return {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) else \
        {"": np.asarray(out)}


def _single(d: dict[str, np.ndarray]) -> np.ndarray:
    assert len(d) == 1, d.keys()
    return next(iter(d.values()))


def test_predict_tensor_content_matches_rest(agent: GrpcAgent, tfs: Any,
                                              digits_eval: Any) -> None:
    x = digits_eval.x[:4]
    proto = tf.make_tensor_proto(x)
    assert proto.tensor_content and not proto.float_val  # the raw fast path
    resp = tfs.Predict(_predict("digits", {"input_layer": proto}), timeout=10)
    got = tf.make_ndarray(resp.outputs["output_0"])
    assert got.shape == (4, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, _single(_rest_predictions(agent, "digits", x)), atol=1e-6)
    assert (resp.model_spec.name, resp.model_spec.version.value) == ("digits", 1)
    assert list(got.argmax(1)) == list(digits_eval.y[:4])


def test_predict_typed_float_val_and_raw_int8(agent: GrpcAgent, tfs: Any,
                                              digits_eval: Any) -> None:
    x = digits_eval.x[4:6]
    want = _single(_rest_predictions(agent, "digits", x))
    typed = tf.make_tensor_proto(x)
    typed.ClearField("tensor_content")
    typed.float_val.extend(x.ravel().tolist())
    got = tf.make_ndarray(tfs.Predict(_predict("digits", {"input_layer": typed}),
                                      timeout=10).outputs["output_0"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    spec = agent.rest("/v1/models/digits/metadata")["metadata"]["edge"]["input_tensor"]
    assert spec["dtype"] == "int8"
    q = np.clip(np.round(x / spec["scale"] + spec["zero_point"]), -128, 127).astype(np.int8)
    raw = tfs.Predict(_predict("digits", {"input_layer": tf.make_tensor_proto(q)}), timeout=10)
    np.testing.assert_allclose(tf.make_ndarray(raw.outputs["output_0"]), want, atol=1e-6)


def test_predict_images_as_dt_string(agent: GrpcAgent, tfs: Any, digits_eval: Any) -> None:
    pngs = [digits_eval.png(i) for i in range(3)]
    resp = tfs.Predict(_predict("digits", {"input_layer": tf.make_tensor_proto(pngs)}),
                       timeout=10)
    got = tf.make_ndarray(resp.outputs["output_0"])
    rest = agent.rest("/v1/models/digits:predict", {"instances": [
        {"b64": base64.b64encode(p).decode()} for p in pngs]})
    np.testing.assert_allclose(got, np.asarray(rest["predictions"]), atol=1e-6)


def test_predict_version_number_and_label(agent: GrpcAgent, tfs: Any,
                                          digits_eval: Any) -> None:
    x = tf.make_tensor_proto(digits_eval.x[:1])
    by_number = tfs.Predict(_predict("digits", {"input_layer": x}, version=1), timeout=10)
    by_label = tfs.Predict(_predict("digits", {"input_layer": x}, label="stable"),
                           timeout=10)
    assert by_label.model_spec.version.value == by_number.model_spec.version.value == 1
    assert by_label.outputs["output_0"] == by_number.outputs["output_0"]


def test_predict_multi_output_every_head_and_filter(agent: GrpcAgent, tfs: Any,
                                                    two_heads: Any) -> None:
    x = two_heads.x[:5].astype(np.float32)
    resp = tfs.Predict(_predict(_two_name(agent), {"features": tf.make_tensor_proto(x)}),
                       timeout=10)
    rest = _rest_predictions(agent, _two_name(agent), x)
    assert sorted(resp.outputs) == sorted(rest) == ["class", "score"]
    for k in rest:
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs[k]), rest[k], atol=1e-5)
    only = tfs.Predict(_predict(_two_name(agent), {"features": tf.make_tensor_proto(x)},
                                output_filter=("score",)), timeout=10)
    assert list(only.outputs) == ["score"]


def _two_name(agent: GrpcAgent) -> str:
    names = [m["name"] for m in agent.rest("/v1/models")["models"]]
    (two,) = [n for n in names if n != "digits"]
    return str(two)


def test_classify_examples_match_rest(agent: GrpcAgent, tfs: Any, digits_eval: Any) -> None:
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "digits"
    pngs = [digits_eval.png(i) for i in range(3)]
    for p in pngs:
        ex = req.input.example_list.examples.add()
        ex.features.feature["image"].bytes_list.value.append(p)
    resp = tfs.Classify(req, timeout=10)
    rest = agent.rest("/v1/models/digits:classify", {"examples": [
        {"image": {"b64": base64.b64encode(p).decode()}} for p in pngs]})["results"]
    got = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
    assert len(got) == 3
    for g, r in zip(got, rest, strict=True):
        assert [c[0] for c in g] == [c[0] for c in r]
        np.testing.assert_allclose([c[1] for c in g], [c[1] for c in r], atol=1e-6)
    assert resp.model_spec.version.value == 1


def test_metadata_is_tf_servings_signature_def_map(agent: GrpcAgent, tfs: Any) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "digits"
    req.metadata_field.append("signature_def")
    resp = tfs.GetModelMetadata(req, timeout=10)
    any_ = resp.metadata["signature_def"]
    assert any_.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert any_.Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    rest = agent.rest("/v1/models/digits/metadata")["metadata"]["signature_def"][
        "signature_def"]["serving_default"]
    assert sorted(sig.inputs) == sorted(rest["inputs"]) == ["input_layer"]
    assert sorted(sig.outputs) == sorted(rest["outputs"])
    inp = sig.inputs["input_layer"]
    assert tf.dtypes.as_dtype(inp.dtype) == tf.float32
    assert [d.size for d in inp.tensor_shape.dim] == [-1, 8, 8, 1]
    assert sig.method_name == "tensorflow/serving/predict"
    assert (resp.model_spec.name, resp.model_spec.version.value) == ("digits", 1)


def test_model_status(agent: GrpcAgent, channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "digits"
    resp = stub.GetModelStatus(req, timeout=10)
    (st,) = resp.model_version_status
    assert st.version == 1
    assert st.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert st.status.error_code == 0 and st.status.error_message == ""
    req.model_spec.version_label = "stable"
    assert stub.GetModelStatus(req, timeout=10).model_version_status[0].version == 1


# ---------------------------------------------------------------------------- KServe v2


def test_triton_health_and_metadata(agent: GrpcAgent) -> None:
    c = tc.InferenceServerClient(agent.grpc)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("digits") and c.is_model_ready("digits", "1")
    assert not c.is_model_ready("no-such-model")
    md = c.get_model_metadata("digits")
    assert (md.name, list(md.versions), md.platform) == ("digits", ["1"], "tflite")
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
        ("input_layer", "FP32", [-1, 8, 8, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in md.outputs] == [
        ("output_0", "FP32", [-1, 10])]


def test_triton_infer_raw_single_output(agent: GrpcAgent, digits_eval: Any) -> None:
    c = tc.InferenceServerClient(agent.grpc)
    x = digits_eval.x[:4]
    inp = tc.InferInput("input_layer", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer("digits", [inp], request_id="req-7")
    got = res.as_numpy("output_0")
    np.testing.assert_allclose(got, _single(_rest_predictions(agent, "digits", x)), atol=1e-6)
    r = res.get_response()
    assert (r.model_name, r.model_version, r.id) == ("digits", "1", "req-7")


def test_triton_infer_multi_output_and_requested_output(agent: GrpcAgent,
                                                        two_heads: Any) -> None:
    c = tc.InferenceServerClient(agent.grpc)
    name = _two_name(agent)
    x = two_heads.x[:3].astype(np.float32)
    inp = tc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer(name, [inp])
    rest = _rest_predictions(agent, name, x)
    for k in ("class", "score"):
        np.testing.assert_allclose(res.as_numpy(k), rest[k], atol=1e-5)
    only = c.infer(name, [inp], outputs=[tc.InferRequestedOutput("score")])
    assert [o.name for o in only.get_response().outputs] == ["score"]
    np.testing.assert_allclose(only.as_numpy("score"), rest["score"], atol=1e-5)


def test_v2_typed_contents_in_typed_out(agent: GrpcAgent, channel: grpc.Channel,
                                        digits_eval: Any) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    x = digits_eval.x[:2]
    req = service_pb2.ModelInferRequest(model_name="digits", model_version="1")
    t = req.inputs.add(name="input_layer", datatype="FP32", shape=list(x.shape))
    t.contents.fp32_contents.extend(x.ravel().tolist())
    resp = stub.ModelInfer(req, timeout=10)
    assert not resp.raw_output_contents
    (out,) = resp.outputs
    got = np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(list(out.shape))
    np.testing.assert_allclose(got, _single(_rest_predictions(agent, "digits", x)), atol=1e-6)


def test_grpc_predictions_share_the_hooks_and_metrics(agent: GrpcAgent, tfs: Any,
                                                      digits_eval: Any) -> None:
    tfs.Predict(_predict("digits", {"input_layer": tf.make_tensor_proto(digits_eval.x[:1])}),
                timeout=10)
    import urllib.request

    with urllib.request.urlopen(agent.http + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'edge_agent_requests_total{model="digits",source="grpc",version="1"}' in text
    assert 'edge_agent_grpc_responses_total{code="OK",method="Predict"}' in text
