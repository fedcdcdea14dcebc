"""Bad input over gRPC: each case gets the right status code and a message naming what was
wrong; the agent keeps serving (over gRPC and REST), the served version does not move, and
no thread is left behind.

The agent is a real ``edge-agent run`` with a bearer token and a 64 KiB message limit; the
clients are tensorflow-serving-api's and tritonclient's, plus a raw channel for bytes that
are not a protobuf at all. The overload case runs an in-process agent so that it can hold
the only interpreter (fault injection, as tests/agent/test_limits.py does for REST).
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_helpers import GrpcAgent, grpc_agent
from waiting import wait_for

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving")
tc = pytest.importorskip("tritonclient.grpc")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "grpc-s3cret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
LIMIT = 64 * 1024
WORKERS = 4  # [grpc] workers: gRPC's thread pool grows to this size and no further
HTTP_CONNECTIONS = 8  # [http] max_connections: the HTTP worker pool's bound
# Thread names the agent gives its pools (edge_agent.threadname), and gRPC core's own
# event-engine pool, which gRPC's lifeguard grows under load and shrinks after ~20 s idle.
POOLS = {"grpc": WORKERS, "http-worker": HTTP_CONNECTIONS}
GRPC_CORE_POOL = "event_engine"
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def agent(digits: Any, two_heads: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[GrpcAgent]:
    toml = f'[http]\ntoken = "{TOKEN}"\nmax_connections = {HTTP_CONNECTIONS}\n'
    grpc_toml = (f"[grpc]\nenabled = true\nport = 0\nmax_message_bytes = {LIMIT}\n"
                 f"workers = {WORKERS}\n")
    with grpc_agent(tmp_path_factory.mktemp("grpc-attacks"), digits.bundle, toml=toml,
                    grpc_toml=grpc_toml, extra_models=(two_heads.bundle,)) as a:
        a.rest("/v1/models", token=TOKEN)  # the HTTP front end keeps one handler thread
        a.baseline_threads = a.thread_names()  # before any RPC: no gRPC pool thread yet
        yield a


@pytest.fixture(scope="module")
def channel(agent: GrpcAgent) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(agent.grpc) as ch:
        yield ch


@pytest.fixture(scope="module")
def tfs(channel: grpc.Channel) -> Any:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def two_name(agent: GrpcAgent) -> str:
    names = [m["name"] for m in agent.rest("/v1/models", token=TOKEN)["models"]]
    (two,) = [n for n in names if n != "digits"]
    return str(two)


@pytest.fixture
def unmoved(agent: GrpcAgent, tfs: Any, digits_eval: Any) -> Iterator[None]:
    """After the test: still alive, same versions served, REST and gRPC both answer, and
    no thread is left behind: each pool within its bound, every other thread of the agent
    the same as before the first RPC."""
    before_models = agent.rest("/v1/models", token=TOKEN)["models"]
    yield
    assert agent.alive(), agent.log()
    assert agent.rest("/v1/models", token=TOKEN)["models"] == before_models
    x = digits_eval.x[:1]
    rest = agent.rest("/v1/models/digits:predict", {"instances": x.tolist()}, token=TOKEN)
    got = tf.make_ndarray(tfs.Predict(_req("digits", input_layer=tf.make_tensor_proto(x)),
                                      metadata=AUTH, timeout=10).outputs["output_0"])
    np.testing.assert_allclose(got, np.asarray(rest["predictions"]), atol=1e-6)
    _no_thread_left_behind(agent)


def _no_thread_left_behind(agent: GrpcAgent, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (wrong := _left_behind(agent.baseline_threads, agent.thread_names())) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"thread left behind after {timeout_s:g} s: {wrong}")
        time.sleep(0.05)


def _left_behind(before: Counter[str], now: Counter[str]) -> str | None:
    """What is wrong with the agent's threads ``now`` against ``before`` (None: nothing)."""
    def others(c: Counter[str]) -> Counter[str]:
        return Counter({n: k for n, k in c.items()
                        if n != GRPC_CORE_POOL and n.rpartition("_")[0] not in POOLS})
    for pool, bound in POOLS.items():
        if (k := sum(v for n, v in now.items() if n.rpartition("_")[0] == pool)) > bound:
            return f"{k} {pool} pool threads, bound {bound}"
    if others(now) != others(before):
        return f"threads {dict(others(now))}, before {dict(others(before))}"
    return None


def test_left_behind_names_what_is_wrong() -> None:
    before = Counter({"python": 3, "edge-agent-http": 1, "event_engine": 4})
    assert _left_behind(before, before + Counter({"grpc_0": 1, "event_engine": 3})) is None
    grown = before + Counter({f"grpc_{i}": 1 for i in range(WORKERS + 1)})
    assert _left_behind(before, grown) == f"{WORKERS + 1} grpc pool threads, bound {WORKERS}"
    assert "'python': 4" in str(_left_behind(before, before + Counter({"python": 1})))


def _req(name: str, *, version: int | None = None, label: str | None = None,
         **inputs: Any) -> Any:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(v)
    return req


def _fails(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def _predict_error(tfs: Any, req: Any) -> tuple[Any, str]:
    err = _fails(lambda: tfs.Predict(req, metadata=AUTH, timeout=10))
    return err.code(), err.details()


@pytest.mark.usefixtures("unmoved")
def test_malformed_protobuf_is_invalid_argument(channel: grpc.Channel) -> None:
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    for junk in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x10"):
        err = _fails(lambda j=junk: raw(j, metadata=AUTH, timeout=10))
        assert err.code() == Code.INVALID_ARGUMENT, err.details()
        assert "not a valid tensorflow.serving.PredictRequest" in err.details()
    v2raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    err = _fails(lambda: v2raw(b"\xff\xff", metadata=AUTH, timeout=10))
    assert err.code() == Code.INVALID_ARGUMENT
    assert "inference.ModelInferRequest" in err.details()


@pytest.mark.usefixtures("unmoved")
def test_tensor_content_length_not_dtype_times_shape(tfs: Any) -> None:
    t = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    t.tensor_content = t.tensor_content[:-1]
    code, msg = _predict_error(tfs, _req("digits", input_layer=t))
    assert code == Code.INVALID_ARGUMENT
    assert "tensor_content has 255 bytes" in msg and "needs 64 × 4 = 256" in msg


@pytest.mark.usefixtures("unmoved")
def test_typed_values_that_do_not_fill_the_shape(tfs: Any) -> None:
    t = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    t.ClearField("tensor_content")
    t.float_val.extend([0.5] * 63)
    code, msg = _predict_error(tfs, _req("digits", input_layer=t))
    assert code == Code.INVALID_ARGUMENT and "63 values in float_val" in msg


@pytest.mark.usefixtures("unmoved")
def test_one_typed_value_cannot_fill_a_huge_shape(agent: GrpcAgent, tfs: Any,
                                                  two_name: str) -> None:
    """A 30-byte message whose one float_val would fill [2^24, 8] (512 MiB as float32) is
    refused from its shape, before anything is allocated."""
    t = tf.make_tensor_proto(np.zeros((1, 8), np.float32))
    t.ClearField("tensor_content")
    t.tensor_shape.dim[0].size = 1 << 24
    t.float_val.append(1.0)
    rss_before = agent.proc.rss_mb()
    code, msg = _predict_error(tfs, _req(two_name, features=t))
    assert code == Code.INVALID_ARGUMENT
    assert "shape [16777216, 8] is over the limit of 512 elements" in msg  # 64 × 8
    assert agent.proc.peak_rss_mb() < rss_before + 100


@pytest.mark.usefixtures("unmoved")
def test_wrong_dtype(tfs: Any, two_name: str) -> None:
    strings = tf.make_tensor_proto([b"a", b"b"])
    code, msg = _predict_error(tfs, _req(two_name, features=strings))
    assert code == Code.INVALID_ARGUMENT
    assert "input 'features' takes numbers" in msg and "byte strings" in msg
    cplx = tf.make_tensor_proto(np.zeros((1, 8), np.complex64))
    code, msg = _predict_error(tfs, _req(two_name, features=cplx))
    assert code == Code.INVALID_ARGUMENT and "dtype DT_COMPLEX64 is not supported" in msg


@pytest.mark.usefixtures("unmoved")
def test_wrong_shape_and_unknown_input(tfs: Any, two_name: str) -> None:
    code, msg = _predict_error(tfs, _req(two_name, features=tf.make_tensor_proto(
        np.zeros((1, 7), np.float32))))
    assert code == Code.INVALID_ARGUMENT and "expected shape [batch, 8]" in msg
    code, msg = _predict_error(tfs, _req(two_name, nope=tf.make_tensor_proto(
        np.zeros((1, 8), np.float32))))
    assert code == Code.INVALID_ARGUMENT and "input 'nope' is not in the signature" in msg


@pytest.mark.usefixtures("unmoved")
def test_unknown_model_version_and_label(tfs: Any, channel: grpc.Channel) -> None:
    x = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    code, msg = _predict_error(tfs, _req("no-such-model", input_layer=x))
    assert code == Code.NOT_FOUND and "Servable not found for request: Latest(no-such-model)" \
        in msg
    code, msg = _predict_error(tfs, _req("digits", version=9, input_layer=x))
    assert code == Code.NOT_FOUND and "Specific(digits, 9)" in msg
    code, msg = _predict_error(tfs, _req("digits", label="canary", input_layer=x))
    assert code == Code.INVALID_ARGUMENT and "Unrecognized servable version label: canary" \
        in msg
    status = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "no-such-model"
    err = _fails(lambda: status.GetModelStatus(req, metadata=AUTH, timeout=10))
    assert err.code() == Code.NOT_FOUND


@pytest.mark.usefixtures("unmoved")
def test_message_over_the_limit_is_resource_exhausted(tfs: Any, two_name: str) -> None:
    big = tf.make_tensor_proto(np.zeros((LIMIT // 32 + 8, 8), np.float32))  # > 64 KiB
    code, msg = _predict_error(tfs, _req(two_name, features=big))
    assert code == Code.RESOURCE_EXHAUSTED and "larger than max" in msg


@pytest.mark.usefixtures("unmoved")
def test_missing_or_wrong_token_is_unauthenticated(agent: GrpcAgent, tfs: Any) -> None:
    x = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    for md in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        err = _fails(lambda m=md: tfs.Predict(_req("digits", input_layer=x), metadata=m,
                                              timeout=10))
        assert err.code() == Code.UNAUTHENTICATED
        assert "authorization: Bearer <token>" in err.details()
    c = tc.InferenceServerClient(agent.grpc)
    with pytest.raises(tc.InferenceServerException) as e:
        c.get_model_metadata("digits")
    assert "UNAUTHENTICATED" in str(e.value.status())
    assert c.is_server_live()  # the liveness probe needs no token
    assert c.get_model_metadata("digits", headers={"authorization": f"Bearer {TOKEN}"}).name \
        == "digits"


@pytest.mark.usefixtures("unmoved")
def test_v2_bad_inputs(channel: grpc.Channel) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def infer(req: Any) -> tuple[Any, str]:
        err = _fails(lambda: stub.ModelInfer(req, metadata=AUTH, timeout=10))
        return err.code(), err.details()

    req = service_pb2.ModelInferRequest(model_name="digits")
    req.inputs.add(name="input_layer", datatype="FP32", shape=[1, 8, 8, 1])
    req.raw_input_contents.append(b"\0" * 255)
    code, msg = infer(req)
    assert code == Code.INVALID_ARGUMENT and "raw_input_contents has 255 bytes" in msg
    req.raw_input_contents.append(b"\0" * 256)
    code, msg = infer(req)
    assert code == Code.INVALID_ARGUMENT and "2 raw_input_contents for 1 inputs" in msg
    bad = service_pb2.ModelInferRequest(model_name="digits")
    bad.inputs.add(name="input_layer", datatype="COMPLEX", shape=[1, 8, 8, 1])
    code, msg = infer(bad)
    assert code == Code.INVALID_ARGUMENT and "datatype 'COMPLEX' is not one of" in msg
    neg = service_pb2.ModelInferRequest(model_name="digits")
    neg.inputs.add(name="input_layer", datatype="FP32", shape=[-1, 8, 8, 1])
    code, msg = infer(neg)
    assert code == Code.INVALID_ARGUMENT and "negative size" in msg
    code, msg = infer(service_pb2.ModelInferRequest(model_name="nope"))
    assert code == Code.NOT_FOUND
    code, msg = infer(service_pb2.ModelInferRequest(model_name="digits", model_version="x1"))
    assert code == Code.INVALID_ARGUMENT and "positive integer" in msg


def test_bursts_of_bad_requests_leave_no_thread(agent: GrpcAgent, tfs: Any) -> None:
    """Two bursts of 200 bad requests from 8 clients: gRPC's pool grows to its fixed size
    ([grpc] workers) at most, and after each burst no other thread is left behind."""
    bad = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    bad.tensor_content = b"\0" * 3

    def burst() -> list[Any]:
        errors: list[Any] = []

        def hammer() -> None:
            for _ in range(25):
                try:
                    tfs.Predict(_req("digits", input_layer=bad), metadata=AUTH, timeout=10)
                except grpc.RpcError as e:
                    errors.append(e.code())

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return errors

    for _ in range(2):
        assert burst() == [Code.INVALID_ARGUMENT] * 200
        assert agent.alive()
        _no_thread_left_behind(agent)


def test_overloaded_model_is_resource_exhausted_and_shares_the_rest_gate(
        start_agent: Any, digits: Any, digits_eval: Any) -> None:
    """workers=1, queue_size=1, the only interpreter held: one REST and one gRPC request
    are admitted (one gate for both protocols); the next gRPC one is refused at once."""
    agent = start_agent(digits.bundle, **{"http.queue_size": 1, "grpc.enabled": True,
                                          "grpc.port": 0})
    x = digits_eval.x[:1]
    req = _req("digits", input_layer=tf.make_tensor_proto(x))
    client = start_agent.client(agent)
    results: list[Any] = []
    with grpc.insecure_channel(agent.grpc.address) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        with agent.registry.get("digits").borrow():  # fault injection: the interpreter is busy
            held = [threading.Thread(target=lambda: results.append(client.post(
                        "/v1/models/digits:predict", {"instances": x.tolist()}).status)),
                    threading.Thread(target=lambda: results.append(
                        bool(stub.Predict(req, timeout=30).outputs)))]
            for t in held:
                t.start()
            wait_for(lambda: agent.admission.in_flight() == 2, what="two admitted requests")
            err = _fails(lambda: stub.Predict(req, timeout=10))
            assert err.code() == Code.RESOURCE_EXHAUSTED and "busy" in err.details()
        for t in held:
            t.join(10)
        assert sorted(map(str, results)) == ["200", "True"]
        assert stub.Predict(req, timeout=10).outputs  # recovers
    metrics = client.get("/metrics").body.decode()
    assert 'edge_agent_rejected_total{model="digits",reason="queue_full"} 1.0' in metrics
    assert agent.admission.in_flight() == 0


def test_mtls_refuses_a_client_without_a_certificate(start_agent: Any, digits: Any,
                                                     digits_eval: Any, tmp_path: Path) -> None:
    certs = _certs()
    ca = certs.CA(tmp_path, "grpc-ca")
    server, client = ca.issue("server", server=True), ca.issue("client", server=False)
    agent = start_agent(digits.bundle, **{
        "grpc.enabled": True, "grpc.port": 0, "grpc.cert_file": str(server.cert),
        "grpc.key_file": str(server.key), "grpc.client_ca_file": str(ca.pair.cert)})
    where = f"localhost:{agent.grpc.port}"
    req = _req("digits", input_layer=tf.make_tensor_proto(digits_eval.x[:1]))
    good = grpc.ssl_channel_credentials(ca.pair.cert.read_bytes(), client.key.read_bytes(),
                                        client.cert.read_bytes())
    with grpc.secure_channel(where, good) as ch:
        assert prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            req, timeout=10).outputs
    no_cert = grpc.ssl_channel_credentials(ca.pair.cert.read_bytes())
    with grpc.secure_channel(where, no_cert) as ch:
        err = _fails(lambda: prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            req, timeout=10))
        assert err.code() == Code.UNAVAILABLE
    with grpc.insecure_channel(where) as ch:
        err = _fails(lambda: prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            req, timeout=10))
        assert err.code() == Code.UNAVAILABLE
    assert agent.registry.active_version("digits") == 1


def _certs() -> Any:
    """tests/telemetry/telemetry_certs.py (the test CA), loaded by path."""
    path = ROOT / "tests" / "telemetry" / "telemetry_certs.py"
    spec = importlib.util.spec_from_file_location("_grpc_telemetry_certs", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_grpc_config_without_grpcio_fails_in_one_line_naming_the_extra(
        tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[grpc]\nenabled = true\n")
    code = ("import sys; sys.modules['grpc'] = None\n"
            "from edge_agent.cli import main\n"
            f"sys.exit(main(['run', '--config', {str(cfg)!r}, '--store', "
            f"{str(tmp_path / 'store')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "grpc.enabled" in lines[0] and "pip install 'edge-inference[grpc]'" in lines[0]


@pytest.mark.usefixtures("unmoved")
def test_control_plane_rpcs_are_not_served(channel: grpc.Channel) -> None:
    for method in ("/tensorflow.serving.ModelService/HandleReloadConfigRequest",
                   "/tensorflow.serving.PredictionService/Regress",
                   "/tensorflow.serving.PredictionService/MultiInference"):
        err = _fails(lambda m=method: channel.unary_unary(m)(b"", metadata=AUTH, timeout=10))
        assert err.code() == Code.UNIMPLEMENTED, method


def test_grpc_bad_input_is_recorded_as_the_clients_fault(start_agent: Any, digits: Any,
                                                         digits_eval: Any) -> None:
    """The prediction hooks (telemetry, drift, probation) see gRPC requests with
    source="grpc"; a bad one is the client's fault, never held against the model."""
    agent = start_agent(digits.bundle, **{"grpc.enabled": True, "grpc.port": 0})
    records: list[Any] = []
    agent.hooks.on_prediction(records.append)
    bad = tf.make_tensor_proto(np.zeros((1, 7), np.float32))
    with grpc.insecure_channel(agent.grpc.address) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        err = _fails(lambda: stub.Predict(_req("digits", input_layer=bad), timeout=10))
        assert err.code() == Code.INVALID_ARGUMENT
        stub.Predict(_req("digits", input_layer=tf.make_tensor_proto(digits_eval.x[:2])),
                     timeout=10, metadata=(("x-request-id", "r-1"),))
    wait_for(lambda: len(records) == 2, what="two prediction records")
    failed, ok = records
    assert (failed.source, failed.ok, failed.fault) == ("grpc", False, "client")
    assert (ok.source, ok.ok, ok.batch, ok.request_id) == ("grpc", True, 2, "r-1")
    assert ok.client and ok.client.startswith("ipv")


def test_grpc_decodes_share_the_rest_decode_permits(start_agent: Any, digits: Any,
                                                     digits_eval: Any) -> None:
    """One path inside: gRPC Predict decodes under the same ``workers`` decode permits as
    REST bodies. With every permit held, a Predict is RESOURCE_EXHAUSTED (nothing decoded,
    nothing predicted); once they are free it answers."""
    agent = start_agent(digits.bundle, **{"grpc.enabled": True, "grpc.port": 0})
    adm = agent.admission
    adm.decode_wait_s = 0.2
    records: list[Any] = []
    agent.hooks.on_prediction(records.append)
    req = _req("digits", input_layer=tf.make_tensor_proto(digits_eval.x[:1]))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for _ in range(adm.workers):
                stack.enter_context(adm.decoding(0))
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        with grpc.insecure_channel(agent.grpc.address) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            err = _fails(lambda: stub.Predict(req, timeout=10))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "decoding is busy" in (err.details() or "")
            assert records == []
            release.set()
            t.join(10)
            resp = stub.Predict(req, timeout=10)
            assert list(resp.outputs) and len(records) == 1
    finally:
        release.set()
        t.join(10)
