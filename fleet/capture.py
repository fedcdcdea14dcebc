"""``edge-fleet capture pull --device D -o DIR``: a device's captured inputs, labelled.

Over MQTT, through the device's ``capture_list`` / ``capture_get`` commands (chunked:
each reply carries at most the device's ``chunk_bytes``), so it works wherever the fleet
tools reach the broker and the broker's ACL lets this user command the device
(docs/capture.md). Everything is bounded: the wait for the device's retained status (an
unknown device is an error, exit 2, after ``--timeout``), each reply, every item's size
and the total pulled.

The output is the labelled-folder layout ``edge-convert convert --eval DIR`` reads:
``DIR/<label>/<id>.png`` (one folder per label of the model, so the sorted folder names
index the classes as the model does; the folder is the label feedback gave for items
captured because feedback disagreed, else the *predicted* label: review those before using
them as ground truth), ``DIR/features.npz`` for ``mode = "features"``
items (``x``, ``y`` = predicted class, ``labels``), and ``DIR/index.jsonl`` with each
item's metadata (model, version, reason, confidence, request id, time).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import queue
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_agent.capture.store import decode_item
from edge_agent.errors import InvalidRequestError, NotFoundError, TransportError
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.payloads import parse_json
from edge_agent.mqtt.topics import Topics
from fleet.broker import add_broker_args, broker_config, client_config

MAX_ITEM_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024


class CapturePuller:
    """One MQTT connection asking one device for its capture store."""

    def __init__(self, config: MqttConfig, device: str, *, timeout_s: float) -> None:
        self.topics = Topics(device, config.topic_prefix)
        self.device, self.timeout_s = device, timeout_s
        self._replies: queue.Queue[Any] = queue.Queue(64)
        self._status: queue.Queue[Any] = queue.Queue(4)
        self.client = MqttClient(config=client_config(config, "capture"),
                                 client_id=f"edge-fleet-capture-{time.time_ns()}")

    def __enter__(self) -> CapturePuller:
        c = self.client
        c.subscribe(self.topics.status, lambda _t, p: self._offer(self._status, p))
        for name in ("capture_list", "capture_get"):
            c.subscribe(self.topics.reply(name), lambda _t, p: self._offer(self._replies, p))
        c.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.stop()

    @staticmethod
    def _offer(q: queue.Queue[Any], payload: bytes) -> None:
        try:
            q.put_nowait(parse_json(payload, "reply"))
        except (queue.Full, InvalidRequestError):
            pass

    def wait_online(self) -> None:
        """Raises NotFoundError (no retained status: unknown device), TransportError
        (the device says it is offline: nobody would answer)."""
        try:
            st = self._status.get(timeout=self.timeout_s)
        except queue.Empty:
            raise NotFoundError(
                f"unknown device {self.device!r}: no status on {self.topics.status} within "
                f"{self.timeout_s:g} s (check the id, the --prefix and the broker)") from None
        state = st.get("state") if isinstance(st, dict) else None
        if state == "offline":
            raise TransportError(f"device {self.device!r} is offline: nothing to pull")

    def call(self, name: str, args: dict[str, Any]) -> Any:
        """One command and its result. Raises TransportError (no reply in time) or
        InvalidRequestError (the device refused, with its reason)."""
        rid = uuid.uuid4().hex
        body = json.dumps({"id": rid, "args": args}).encode()
        if not self.client.publish(self.topics.cmd(name), body, 1):
            raise TransportError(f"{name}: not connected to the broker")
        end = time.monotonic() + self.timeout_s
        while (left := end - time.monotonic()) > 0:
            try:
                rep = self._replies.get(timeout=left)
            except queue.Empty:
                break
            if not isinstance(rep, dict) or rep.get("id") != rid:
                continue
            if not rep.get("ok"):
                err = rep.get("error") or {}
                gone = err.get("type") == "NotFoundError"  # evicted since capture_list
                raise (NotFoundError if gone else InvalidRequestError)(
                    f"{self.device}: {name} refused: {err.get('message', err)}")
            return rep.get("result")
        raise TransportError(f"{self.device}: no {name} reply within {self.timeout_s:g} s "
                             "(is capture enabled on the device?)")

    def items(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        after = ""
        while True:
            res = self.call("capture_list", {"after": after})
            out += [(str(i["id"]), int(i["bytes"])) for i in res["items"]]
            if not res.get("more") or not res["items"]:
                return out
            after = out[-1][0]

    def fetch(self, item_id: str, size: int) -> bytes:
        if size > MAX_ITEM_BYTES:
            raise InvalidRequestError(f"capture item {item_id} is {size} bytes, over "
                                      f"{MAX_ITEM_BYTES}")
        data = bytearray()
        while len(data) < size:
            res = self.call("capture_get", {"id": item_id, "offset": len(data)})
            try:
                chunk = base64.b64decode(res["data"], validate=True)
            except (binascii.Error, KeyError, TypeError) as e:
                raise InvalidRequestError(f"capture item {item_id}: bad chunk ({e})") from e
            if not chunk or int(res.get("total", -1)) != size:
                raise InvalidRequestError(f"capture item {item_id} changed while pulled")
            data += chunk
        return bytes(data[:size])


def folder_names(labels: list[str]) -> list[str]:
    """Folder per class whose *sorted* order is the model's class order."""
    if labels and sorted(labels) == labels and len(set(labels)) == len(labels):
        return [lb.replace("/", "_") for lb in labels]
    width = len(str(max(0, len(labels) - 1)))
    return [f"{i:0{width}d}-{lb.replace('/', '_')}" for i, lb in enumerate(labels)]


def write_item(out: Path, item_id: str, data: np.ndarray, meta: dict[str, Any],
               features: list[tuple[np.ndarray, int, list[str]]]) -> str:
    """Write one item into the layout; returns its path relative to ``out``."""
    labels = [str(x) for x in meta.get("labels") or []]
    top1 = int(meta.get("y", meta.get("top1", 0)))  # feedback's label, else the prediction
    if meta.get("mode") == "features" or data.ndim != 3 or data.shape[-1] not in (1, 3):
        features.append((data.astype(np.float32).ravel(), top1, labels))
        return "features.npz"
    if data.dtype != np.uint8:  # mode = "input": model units back to pixels
        pre = meta.get("preprocessing") or {}
        mean = np.asarray(pre.get("mean", (0.0,)), np.float32)
        std = np.asarray(pre.get("std", (255.0,)), np.float32)
        data = np.clip(np.rint(data * std + mean), 0, 255).astype(np.uint8)
    names = folder_names(labels) if labels else [str(top1)]
    for n in names:
        (out / n).mkdir(parents=True, exist_ok=True)
    folder = names[top1] if 0 <= top1 < len(names) else names[0]
    img = Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data)
    rel = f"{folder}/{item_id}.png"
    img.save(out / rel)
    return rel


def pull(config: MqttConfig, device: str, out: Path, *, timeout_s: float = 5.0,
         max_total_bytes: int = MAX_TOTAL_BYTES) -> int:
    """Pull every item into ``out``; returns how many. Raises NotFoundError (unknown
    device), TransportError (offline, no reply), InvalidRequestError (a bad item)."""
    features: list[tuple[np.ndarray, int, list[str]]] = []
    n = total = 0
    with CapturePuller(config, device, timeout_s=timeout_s) as p:
        p.wait_online()  # an unknown device leaves nothing behind
        listed = p.items()
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "index.jsonl", "w", encoding="utf-8") as index:
            for item_id, size in listed:
                total += size
                if total > max_total_bytes:
                    raise InvalidRequestError(
                        f"capture pull: over --max-bytes {max_total_bytes}")
                try:
                    blob = p.fetch(item_id, size)
                except NotFoundError:  # evicted between capture_list and capture_get
                    continue
                data, meta = decode_item(blob, max_bytes=MAX_ITEM_BYTES)
                rel = write_item(out, item_id, data, meta, features)
                index.write(json.dumps({"id": item_id, "file": rel, **meta}) + "\n")
                n += 1
    if features:
        np.savez(out / "features.npz", x=np.stack([f for f, _, _ in features]),
                 y=np.asarray([t for _, t, _ in features], np.int64),
                 labels=np.asarray(features[-1][2] or [""]))
    return n


def cmd_pull(a: argparse.Namespace) -> int:
    n = pull(broker_config(a), a.device, Path(a.output), timeout_s=a.timeout,
             max_total_bytes=a.max_bytes)
    print(f"{n} captured items from {a.device} in {a.output}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("capture", help="a device's captured inputs (docs/capture.md)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="capture_cmd", required=True)
    q = sub.add_parser("pull", help="fetch them into a labelled-folder layout",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--device", required=True, help="device id")
    q.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    q.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the device's status and for each reply")
    q.add_argument("--max-bytes", type=int, default=MAX_TOTAL_BYTES,
                   help="stop with an error past this many bytes pulled")
    add_broker_args(q)
    q.set_defaults(func=cmd_pull)
