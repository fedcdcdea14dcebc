"""Input sources: MQTT request topic (real Mosquitto), watch folder (across a restart),
camera (synthetic frames)."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import DigitsEval, MqttRequester
from waiting import wait_for

from edge_agent.config import WatchSettings
from edge_agent.errors import RuntimeUnavailableError
from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.mqtt.dispatch import Message
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime
from edge_agent.sources import (
    CameraSource,
    JsonlSink,
    MessageLink,
    MqttRequestSource,
    SyntheticFrames,
    WatchFolderSource,
    open_frames,
)
from edge_agent.sources.watch import move_file

# ----------------------------------------------------------------------------- MQTT


def test_the_agents_mqtt_client_is_a_message_link(mqtt_link: Any) -> None:
    assert isinstance(mqtt_link, MessageLink)


@pytest.fixture
def mqtt_agent(start_agent: Any, digits: Any, mqtt_link: Any, requester: MqttRequester) -> Any:
    agent = start_agent(digits.bundle, digits.bundle_v2, link=mqtt_link)
    assert [s.name for s in agent.sources] == ["mqtt_requests"]
    requester.subscribe("edge/dev1/results/#")
    # the agent's SUBSCRIBE and our PUBLISH travel on two connections: without its SUBACK
    # the first request can reach the broker before the subscription does (and be lost)
    assert mqtt_link.wait_subscribed(agent.sources[0].topic_filter, 10)
    return agent


def test_mqtt_request_gets_a_reply_with_its_id(mqtt_agent: Any, requester: MqttRequester,
                                               digits_eval: DigitsEval) -> None:
    x, y = digits_eval.x[:10], digits_eval.y[:10]
    requester.publish("edge/dev1/infer/digits", {"id": "r-1", "instances": x.tolist()})
    topic, reply = requester.next()
    assert topic == "edge/dev1/results/digits"
    assert reply["id"] == "r-1" and reply["model"] == "digits" and reply["version"] == 2
    assert np.mean(np.argmax(reply["predictions"], axis=1) == y) >= 0.9


def test_mqtt_columnar_request_and_explicit_version(mqtt_agent: Any, requester: MqttRequester,
                                                    digits_eval: DigitsEval) -> None:
    requester.publish("edge/dev1/infer/digits",
                      {"id": 7, "version": 1, "inputs": digits_eval.x[:2].tolist()})
    _, reply = requester.next()
    assert reply["id"] == 7 and reply["version"] == 1 and len(reply["outputs"]) == 2


def test_mqtt_image_request_returns_labels_and_scores(mqtt_agent: Any,
                                                      requester: MqttRequester,
                                                      digits_eval: DigitsEval) -> None:
    for i in range(5):
        requester.publish("edge/dev1/infer/digits", {
            "id": f"img-{i}", "k": 2, "b64": base64.b64encode(digits_eval.png(i)).decode()})
    replies: dict[str, Any] = {}
    for _ in range(5):
        _, r = requester.next()
        replies[r["id"]] = r
    for i in range(5):
        r = replies[f"img-{i}"]
        assert len(r["labels"]) == 2 and r["labels"][0] == str(digits_eval.y[i])
        assert r["scores"][0] >= r["scores"][1]


def test_mqtt_reply_topic_from_request_or_mqtt5_response_topic(
        mqtt_agent: Any, requester: MqttRequester, digits_eval: DigitsEval) -> None:
    requester.subscribe("replies/app/+")
    body = {"instances": digits_eval.x[:1].tolist()}
    requester.publish("edge/dev1/infer/digits",
                      {"id": "a", "reply_to": "replies/app/json", **body})
    assert requester.next()[0] == "replies/app/json"
    requester.publish("edge/dev1/infer/digits", {"id": "b", **body},
                      response_topic="replies/app/v5")
    topic, reply = requester.next()
    assert topic == "replies/app/v5" and reply["id"] == "b"


@pytest.mark.parametrize(("topic", "payload", "code", "fragment"), [
    ("edge/dev1/infer/nope", {"id": "x", "instances": [1]}, 404, "model 'nope' not found"),
    ("edge/dev1/infer/digits", {"instances": [1]}, 400, 'needs an "id"'),
    ("edge/dev1/infer/digits", {"id": "x", "instances": [[1]]}, 400, "expected shape"),
    ("edge/dev1/infer/digits", b"{broken", 400, "not JSON"),
    ("edge/dev1/infer/digits", {"id": "x", "b64": "%%%"}, 400, "invalid base64"),
    ("edge/dev1/infer/digits", {"id": "x", "b64": "aGVsbG8="}, 400, "not a decodable image"),
    ("edge/dev1/infer/digits", {"id": "x", "reply_to": "a/#", "instances": [1]}, 400,
     "without wildcards"),
])
def test_bad_mqtt_requests_get_an_error_reply(mqtt_agent: Any, requester: MqttRequester,
                                              digits_eval: DigitsEval, topic: str,
                                              payload: Any, code: int, fragment: str) -> None:
    requester.publish(topic, payload)
    _, reply = requester.next()
    assert reply["code"] == code and fragment in reply["error"]
    assert reply["id"] == (payload.get("id") if isinstance(payload, dict) else None)
    requester.publish("edge/dev1/infer/digits",
                      {"id": "ok", "instances": digits_eval.x[:1].tolist()})
    assert requester.next()[1]["id"] == "ok"  # still serving


class _Link:
    """Records publishes; fault injection for the queue-full path (no broker needed)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def subscribe_message(self, topic_filter: str, handler: Any, qos: int = 1,
                          **_limits: Any) -> Any:
        self.on_message = handler
        return lambda: None

    def handler(self, topic: str, payload: bytes) -> None:
        self.on_message(Message(topic, payload, qos=1, retain=False))

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload)))


def test_full_mqtt_request_queue_answers_503_at_once(digits: Any,
                                                     digits_eval: DigitsEval) -> None:
    from edge_agent.bundle import read_bundle
    from edge_agent.config import MqttRequestsSettings

    reg = ModelRegistry(select_runtime(), Hooks(), num_threads=1)
    served = reg.load(read_bundle(digits.bundle))
    link = _Link()
    src = MqttRequestSource(link, reg, "dev1", MqttRequestsSettings(queue_size=1))
    src.start()
    x = digits_eval.x[:1].tolist()
    try:
        with served.borrow():  # the worker takes request 0 and blocks; 1 waits in the queue
            for i in range(3):
                link.handler("edge/dev1/infer/digits",
                             json.dumps({"id": i, "instances": x}).encode())
                if i == 0:
                    wait_for(lambda: src.queue_depth() == 0, what="worker took request 0")
            assert [m["code"] for _, m in link.sent] == [503]
            assert link.sent[0][1]["id"] == 2
        wait_for(lambda: len(link.sent) == 3, what="the queued replies")
        assert sorted(m["id"] for _, m in link.sent[1:]) == [0, 1]
    finally:
        src.stop()


def test_an_unexpected_failure_is_still_answered_500(digits: Any, digits_eval: DigitsEval,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug below the source (not a bad request) must not leave the client waiting."""
    from edge_agent.bundle import read_bundle
    from edge_agent.serving import codec

    reg = ModelRegistry(select_runtime(), Hooks(), num_threads=1)
    reg.load(read_bundle(digits.bundle))
    link = _Link()
    src = MqttRequestSource(link, reg, "dev1")
    src.start()
    try:
        def broken(*_a: Any, **_k: Any) -> Any:
            raise KeyError("boom")
        monkeypatch.setattr(codec, "decode_predict", broken)
        link.handler("edge/dev1/infer/digits",
                     json.dumps({"id": "k", "instances": digits_eval.x[:1].tolist()}).encode())
        wait_for(lambda: len(link.sent) == 1, what="the error reply")
        assert link.sent[0][1] == {"id": "k", "model": "digits", "code": 500,
                                   "error": "internal error: KeyError"}
        monkeypatch.undo()
        link.handler("edge/dev1/infer/digits",
                     json.dumps({"id": "ok", "instances": digits_eval.x[:1].tolist()}).encode())
        wait_for(lambda: len(link.sent) == 2, what="the next reply")
        assert link.sent[1][1]["id"] == "ok" and "predictions" in link.sent[1][1]
    finally:
        src.stop()


# ----------------------------------------------------------------------------- watch folder


def _drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    tmp.rename(folder / name)  # atomic drop, as documented


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def test_watch_folder_classifies_moves_and_reports(start_agent: Any, digits: Any,
                                                   digits_eval: DigitsEval,
                                                   tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(6):
        _drop(inbox, f"d{i}.png", digits_eval.png(i))
    _drop(inbox, "broken.jpg", b"definitely not a jpeg")
    (inbox / "notes.txt").write_text("ignored: not an image extension")
    start_agent(digits.bundle, **{"watch.dir": str(inbox), "watch.model": "digits",
                                  "watch.poll_interval_s": 0.05, "watch.settle_s": 0.0})
    results = wait_for(lambda: len(_lines(inbox / "results.jsonl")) == 7 and _lines(
        inbox / "results.jsonl"), what="7 result lines")
    by_file = {r["file"]: r for r in results}
    for i in range(6):
        r = by_file[f"d{i}.png"]
        assert r["labels"][0] == str(digits_eval.y[i]) and r["source"] == "watch"
        assert r["model"] == "digits" and len(r["scores"]) == 3
    assert "not a decodable image" in by_file["broken.jpg"]["error"]
    wait_for(lambda: sorted(p.name for p in (inbox / "done").iterdir()) ==
             [f"d{i}.png" for i in range(6)], what="files in done/")
    assert [p.name for p in (inbox / "failed").iterdir()] == ["broken.jpg"]
    assert (inbox / "notes.txt").exists()


def test_watch_folder_never_reprocesses_after_a_restart(digits: Any, digits_eval: DigitsEval,
                                                        tmp_path: Path) -> None:
    """Run 1 classifies and reports every file but 'crashes' before moving them (a mover
    that fails); run 2 must only move them: no new inference, no duplicate result."""
    from edge_agent.bundle import read_bundle

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(4):
        _drop(inbox, f"d{i}.png", digits_eval.png(i))
    settings = WatchSettings(enabled=True, dir=inbox, model="digits", poll_interval_s=0.05,
                             settle_s=0.0, jsonl=inbox / "results.jsonl",
                             journal=tmp_path / "journal.sqlite3")
    predictions: list[PredictionRecord] = []
    hooks = Hooks()
    hooks.on_prediction(predictions.append)
    reg = ModelRegistry(select_runtime(), hooks, num_threads=1)
    reg.load(read_bundle(digits.bundle))

    def crash(src: Path, dest: Path) -> None:
        raise OSError("simulated crash before the move")

    run1 = WatchFolderSource(settings, reg, JsonlSink(settings.jsonl), mover=crash)
    run1.start()
    wait_for(lambda: len(_lines(inbox / "results.jsonl")) == 4, what="4 results in run 1")
    run1.stop()
    assert len(predictions) == 4 and len(list(inbox.glob("*.png"))) == 4

    _drop(inbox, "d9.png", digits_eval.png(9))  # arrives while the agent is down
    run2 = WatchFolderSource(settings, reg, JsonlSink(settings.jsonl), mover=move_file)
    run2.start()
    wait_for(lambda: len(list((inbox / "done").glob("*.png"))) == 5, what="5 files moved")
    run2.stop()
    names = [r["file"] for r in _lines(inbox / "results.jsonl")]
    assert sorted(names) == ["d0.png", "d1.png", "d2.png", "d3.png", "d9.png"]  # once each
    assert len(predictions) == 5  # only d9 was classified in run 2
    assert run2.processed == 1


def test_watch_folder_waits_for_a_missing_model(digits: Any, digits_eval: DigitsEval,
                                                tmp_path: Path) -> None:
    from edge_agent.bundle import read_bundle

    inbox = tmp_path / "in"
    inbox.mkdir()
    _drop(inbox, "a.png", digits_eval.png(0))
    settings = WatchSettings(enabled=True, dir=inbox, model="digits", settle_s=0.0,
                             jsonl=inbox / "out.jsonl")
    reg = ModelRegistry(select_runtime(), Hooks(), num_threads=1)
    src = WatchFolderSource(settings, reg, JsonlSink(inbox / "out.jsonl"))
    src.open()  # no polling thread: this test drives the scans
    try:
        assert src.scan_once() == 0 and (inbox / "a.png").exists()
        reg.load(read_bundle(digits.bundle))
        assert src.scan_once() == 1 and not (inbox / "a.png").exists()
    finally:
        src.stop()


# ----------------------------------------------------------------------------- camera


def test_camera_source_classifies_synthetic_frames(digits: Any, digits_eval: DigitsEval,
                                                   tmp_path: Path) -> None:
    from edge_agent.bundle import read_bundle

    reg = ModelRegistry(select_runtime(), Hooks(), num_threads=1)
    reg.load(read_bundle(digits.bundle))
    frames = [np.repeat(np.round(digits_eval.x[i] * 255).astype(np.uint8), 3, axis=-1)
              for i in range(8)]  # RGB frames of the held-out digits
    out = tmp_path / "camera.jsonl"
    cam = CameraSource(SyntheticFrames(frames, loop=False), reg, "digits", JsonlSink(out),
                       interval_s=0.0)
    cam.start()
    assert cam.finished.wait(10)
    cam.stop()
    results = _lines(out)
    assert [r["frame"] for r in results] == list(range(8))
    assert [r["labels"][0] for r in results] == [str(v) for v in digits_eval.y[:8]]
    assert all(r["source"] == "camera" for r in results)


def test_camera_runs_inside_the_agent_and_stops_after_max_frames(start_agent: Any,
                                                                  digits: Any,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "cam.jsonl"
    agent = start_agent(digits.bundle, **{
        "camera.enabled": True, "camera.model": "digits", "camera.device": "synthetic",
        "camera.interval_s": 0.0, "camera.max_frames": 5, "camera.jsonl": str(out),
        "camera.publish_mqtt": False, "mqtt_requests.enabled": False})
    assert [s.name for s in agent.sources] == ["camera"]
    wait_for(lambda: len(_lines(out)) == 5, what="5 camera results")


def test_opencv_camera_without_opencv_says_how_to_install() -> None:
    if importlib.util.find_spec("cv2") is not None:
        pytest.skip("OpenCV is installed here")
    with pytest.raises(RuntimeUnavailableError, match=r"edge-inference\[camera\]"):
        open_frames("0")
