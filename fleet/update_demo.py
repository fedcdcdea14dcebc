"""The README demo's update step: a signed v2 swapped in, then a forged v3 refused.

::

    python -m fleet.update_demo setup DIR
        # keys (DIR/keys) and repository (DIR/repo); prints the root.json to put in the
        # agent's [update] root_file before starting it
    python -m fleet.update_demo run DIR --broker URL --device ID --v2 BUNDLE --v3 BUNDLE
        [broker options: fleet.broker]

``run`` watches ``edge/<device>/events``, publishes v2 signed by the repository's keys
and waits for ``update.committed``; then signs v3 with a key the device's root does not
know (what an attacker with broker access can do) and waits for ``update.rejected``,
printing its reason. Exit 0 when both happened. :func:`run` is the same as a function.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol import Event, EventKind, ProtocolError
from edge_agent.update.wire import Announcement, Audience, ChunkPlan, TargetSpec
from fleet import keys
from fleet.broker import add_broker_args, as_config, broker_config, client_config
from fleet.publish import Broker, announce, audience_topics, publish, publish_chunks
from fleet.repo import FleetRepo, target_path_for_model

ROLES = ("root", "targets", "snapshot", "timestamp")
Print = Callable[[str], None]


def setup(d: Path, out: Print = print) -> Path:
    """Create one key per role and the repository (idempotent). Returns root.json."""
    repo_dir, key_dir = d / "repo", d / "keys"
    if not (repo_dir / "metadata" / "1.root.json").exists():
        for r in ROLES:
            if not (key_dir / f"{r}.key").exists():
                keys.generate(key_dir, r)
        pubs = {r: keys.load_public(key_dir / f"{r}.pub") for r in ROLES}
        FleetRepo.create(repo_dir, keys={r: [pubs[r]] for r in ROLES}, thresholds={},
                         signers=[keys.load_signer(key_dir / "root.key")])
    root = repo_dir / "metadata" / "1.root.json"
    out(f"repository {repo_dir}; set [update] root_file = \"{root}\" in the agent config")
    return root


def run(d: Path, *, broker: MqttConfig | str, device: str, v2: Path, v3: Path,
        timeout_s: float = 60.0, out: Print = print) -> int:
    """Publish signed v2, show the swap; publish forged v3, show why it is refused.

    ``broker``: validated settings (:func:`fleet.broker.broker_config`) or a plain URL.
    """
    broker = as_config(broker)
    repo = FleetRepo(d / "repo")
    signers = [keys.load_signer(d / "keys" / f"{r}.key") for r in ROLES[1:]]
    events: queue.Queue[Event] = queue.Queue()
    watcher = MqttClient(config=client_config(broker, "watch"),
                         client_id=f"edge-fleet-demo-{uuid.uuid4().hex[:6]}")

    def on_event(_t: str, payload: bytes) -> None:
        try:
            ev = Event.parse(payload)
        except ProtocolError:
            return
        if ev.kind.startswith("update."):
            events.put(ev)

    watcher.subscribe(Topics(device).events, on_event)
    watcher.connect()
    try:
        time.sleep(0.3)
        me = Audience((device,), ())
        out(f"$ edge-fleet publish {v2} --device {device}   (signed: targets, snapshot, "
            "timestamp keys)")
        publish(repo, v2, signers, audience=me, broker=client_config(broker, "publish"))
        if not _wait(events, EventKind.UPDATE_COMMITTED, timeout_s, out):
            return 1
        out(f"$ forging v3: signed with a key that {device}'s root does not know")
        name = f"rogue-{uuid.uuid4().hex[:6]}"
        keys.generate(d / "attacker", name)
        _forge(repo, v3, keys.load_signer(d / "attacker" / f"{name}.key"), signers, me,
               client_config(broker, "forge"))
        return 0 if _wait(events, EventKind.UPDATE_REJECTED, timeout_s, out) else 1
    finally:
        watcher.stop()


def _forge(repo: FleetRepo, bundle: Path, rogue: Any, online: list[Any], me: Audience,
           broker: MqttConfig | str) -> None:
    """What a broker-level attacker can build: real timestamp/snapshot keys are not needed
    for the device to refuse it, so only the targets signature is forged here."""
    import hashlib
    from datetime import datetime, timedelta, timezone

    from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

    b = read_bundle(bundle)
    data = tar_bytes(b)
    path = target_path_for_model(b.name, b.version)
    spec = TargetSpec("model", me, b.name, b.version, b.manifest.target_profiles,
                      ChunkPlan.for_data(data, 256 * 1024))
    tf = TargetFile.from_data(path, data, ["sha256"])
    tf.unrecognized_fields["custom"] = spec.to_custom()
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    tv, sv = repo.latest_version("targets") + 1, repo.latest_version("snapshot") + 1
    t = Metadata(Targets(version=tv, expires=soon, targets={**repo.targets(), path: tf}))
    t.sign(rogue)
    tdata = t.to_bytes()
    s = Metadata(Snapshot(version=sv, expires=soon, meta={"targets.json": MetaFile(
        tv, len(tdata), {"sha256": hashlib.sha256(tdata).hexdigest()})}))
    for k in online:
        if k.public_key.keyid in repo.root().signed.roles["snapshot"].keyids:
            s.sign(k)
    sdata = s.to_bytes()
    ts = Metadata(Timestamp(version=repo.latest_version("timestamp") + 1, expires=soon,
                            snapshot_meta=MetaFile(sv, len(sdata), {
                                "sha256": hashlib.sha256(sdata).hexdigest()})))
    for k in online:
        if k.public_key.keyid in repo.root().signed.roles["timestamp"].keyids:
            ts.sign(k)
    files = {f"metadata/{tv}.targets.json": tdata, f"metadata/{sv}.snapshot.json": sdata,
             "metadata/timestamp.json": ts.to_bytes()}
    br = Broker(broker)
    try:
        assert spec.chunks is not None
        publish_chunks(br, data, spec.chunks, hashlib.sha256(data).hexdigest())
        announce(br, audience_topics(me), Announcement(path, files, chunks=True,
                                                       published_at=time.time()))
    finally:
        br.close()


def _wait(events: queue.Queue[Event], kind: EventKind, timeout_s: float, out: Print) -> bool:
    deadline = time.monotonic() + timeout_s
    final = {EventKind.UPDATE_COMMITTED, EventKind.UPDATE_REJECTED,
             EventKind.UPDATE_ROLLED_BACK, EventKind.UPDATE_FAILED}
    while time.monotonic() < deadline:
        try:
            ev = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if ev.kind != EventKind.UPDATE_PROGRESS:
            out(f"  {ev.kind:<22} {ev.message}")
        if ev.kind in final:
            return ev.kind == kind
    out(f"  (no {kind} within {timeout_s:g} s)")
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fleet.update_demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("dir", type=Path)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    add_broker_args(r)
    r.add_argument("--device", required=True)
    r.add_argument("--v2", type=Path, required=True)
    r.add_argument("--v3", type=Path, required=True)
    r.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    if a.cmd == "setup":
        setup(a.dir)
        return 0
    return run(a.dir, broker=broker_config(a), device=a.device, v2=a.v2, v3=a.v3,
               timeout_s=a.timeout)


if __name__ == "__main__":
    sys.exit(main())


def disagreeing(src: Path, out: Path, *, version: int, favour: int = 2) -> Path:
    """A bad candidate for shadow evaluation (demo, tests): ``src`` with the final dense
    layer's bias of class ``favour`` raised in the real TFLite flatbuffer, so it answers
    that class for most inputs, yet loads and passes its own (recomputed) golden vectors."""
    from dataclasses import replace

    import numpy as np

    from edge_agent.bundle import Bundle, EncodedArray, sha256_bytes, write_bundle
    from edge_agent.runtime.backends import get_runtime
    from edge_agent.runtime.model import LoadedModel

    b = read_bundle(src)
    rt = get_runtime("ai-edge-litert") or get_runtime("tflite-runtime")
    assert rt is not None
    it = rt.make_interpreter(model_content=b.model_bytes)
    it.allocate_tensors()
    bias = next(it.get_tensor(d["index"]) for d in it.get_tensor_details()
                if d["dtype"] == np.int32 and tuple(d["shape"]) == (10,))
    at = b.model_bytes.find(bias.tobytes())
    assert at > 0 and b.model_bytes.count(bias.tobytes()) == 1, "final bias not found once"
    new = bias.copy()
    new[favour] += 1 << 20  # far above any logit: (nearly) every input now answers `favour`
    data = b.model_bytes[:at] + new.tobytes() + b.model_bytes[at + len(new.tobytes()):]
    model = LoadedModel(rt, data, num_threads=1)
    golden = []
    for g in b.manifest.golden:
        raw = model.invoke_raw({k: v.decode() for k, v in g.inputs.items()})
        golden.append(g.with_output(EncodedArray.encode(raw[0]), atol=0.0))
    m = replace(b.manifest, version=version, model_sha256=sha256_bytes(data),
                model_size=len(data), golden=tuple(golden))
    write_bundle(Bundle(m, data, b.report, str(out)), out)
    return out
