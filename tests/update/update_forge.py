"""Attack material: metadata and chunks an attacker could produce, built from raw parts.

Nothing here goes through :class:`fleet.repo.FleetRepo`'s threshold checks: signatures
are whatever the attacker has. The legitimate repository on disk is never modified.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge_agent.update.wire import ChunkPlan, TargetSpec, encode_chunk
from fleet.repo import FleetRepo

_SER = JSONSerializer(compact=True)


def _in(days: float) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def forge_release(repo: FleetRepo, *, target: tuple[str, bytes, TargetSpec] | None,
                  targets_by: Sequence[Signer], snapshot_by: Sequence[Signer],
                  timestamp_by: Sequence[Signer], bump: int = 1) -> dict[str, bytes]:
    """A new targets/snapshot/timestamp set signed by exactly the given keys."""
    files = {f"metadata/{v}.root.json": repo.root_bytes(v)
             for v in range(2, repo.latest_version("root") + 1)}
    entries = dict(repo.targets())
    if target is not None:
        path, data, spec = target
        tf = TargetFile.from_data(path, data, ["sha256"])
        tf.unrecognized_fields["custom"] = spec.to_custom()
        entries[path] = tf
    tv = repo.latest_version("targets") + bump
    t = Metadata(Targets(version=tv, expires=_in(30), targets=entries))
    for s in targets_by:
        t.sign(s, append=True)
    tdata = t.to_bytes(_SER)
    sv = repo.latest_version("snapshot") + bump
    sn = Metadata(Snapshot(version=sv, expires=_in(7), meta={"targets.json": MetaFile(
        version=tv, length=len(tdata), hashes={"sha256": hashlib.sha256(tdata).hexdigest()})}))
    for s in snapshot_by:
        sn.sign(s, append=True)
    sdata = sn.to_bytes(_SER)
    ts = Metadata(Timestamp(version=repo.latest_version("timestamp") + bump, expires=_in(1),
                            snapshot_meta=MetaFile(version=sv, length=len(sdata), hashes={
                                "sha256": hashlib.sha256(sdata).hexdigest()})))
    for s in timestamp_by:
        ts.sign(s, append=True)
    files[f"metadata/{tv}.targets.json"] = tdata
    files[f"metadata/{sv}.snapshot.json"] = sdata
    files["metadata/timestamp.json"] = ts.to_bytes(_SER)
    return files


def chunk_payloads(data: bytes, plan: ChunkPlan) -> list[bytes]:
    """Chunks of ``data`` cut as ``plan`` says, each with a header hash of its own bytes."""
    out = []
    for i in range(plan.count):
        off, n = plan.span(i)
        out.append(encode_chunk(i, plan.count, plan.length, data[off:off + n]))
    return out


def announce(broker_url: str, topic: str, target: str, files: dict[str, bytes], *,
             chunks: list[bytes] | None = None, sha256: str | None = None,
             mirrors: tuple[str, ...] = (), chunked: bool | None = None) -> bytes:
    """Publish (retained) whatever chunks and announcement an attacker chooses
    (``chunked``: what the announcement says about chunks; default: whether any are sent)."""
    import time

    from edge_agent.update.wire import Announcement, chunk_topic
    from fleet.publish import Broker

    b = Broker(broker_url)
    try:
        for i, payload in enumerate(chunks or []):
            assert sha256 is not None
            b.publish(chunk_topic(sha256, i), payload)
        ann = Announcement(target, files, chunks=bool(chunks) if chunked is None else chunked,
                           mirrors=mirrors,
                           published_at=time.time())
        raw = ann.to_bytes()
        b.publish(topic, raw)
        b.flush()
    finally:
        b.close()
    return raw


def republish(broker_url: str, topic: str, payload: bytes) -> None:
    from fleet.publish import Broker

    b = Broker(broker_url)
    try:
        b.publish(topic, payload)
        b.flush()
    finally:
        b.close()


@contextlib.contextmanager
def evil_http_server(data: bytes, *, mode: str,
                     drip_s: float = 0.5) -> Iterator[tuple[str, dict[str, Any]]]:
    """A mirror for every target path (metadata: 404, unless ``state["metadata"]`` maps a
    metadata path to bytes) that serves ``data`` then endless zeros (``endless``), cuts it
    in half and closes (``truncate``), behaves (``ok``: Range honoured), or sends a valid
    head and then ``data`` one byte every ``drip_s`` seconds, never faster (``drip``: a
    slowloris mirror; metadata too in this mode).

    Yields its URL and the mutable state: ``mode``; ``requests``, a list of
    ``(time.monotonic(), path)`` for every request received; ``closed``, the
    ``time.monotonic()`` at which each dripped response found its client gone;
    ``hook``, an optional list that receives each path."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state: dict[str, Any] = {"mode": mode, "requests": [], "closed": [], "metadata": {}}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            state["requests"].append((time.monotonic(), self.path))
            hook = state.get("hook")
            if isinstance(hook, list):
                hook.append(self.path)
            mode = state["mode"]
            body = data
            if "/metadata/" in self.path:
                name = "metadata/" + self.path.rsplit("/metadata/", 1)[1]
                if name not in state["metadata"]:  # metadata comes inline; no newer root here
                    self.send_response(404)
                    self.end_headers()
                    return
                body = state["metadata"][name]
            start = 0
            rng = self.headers.get("Range")
            if mode == "ok" and rng:
                start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206 if start else 200)
            if mode in ("truncate", "ok", "drip"):
                self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            try:
                if mode == "ok":
                    self.wfile.write(body[start:])
                    return
                if mode == "truncate":
                    self.wfile.write(body[:len(body) // 2])
                    return
                if mode == "drip":
                    self.wfile.flush()
                    for i in range(len(body)):
                        time.sleep(drip_s)
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    return
                self.wfile.write(body)
                for _ in range(10_000):  # "endless" (bounded so the test cannot hang)
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                state["closed"].append(time.monotonic())

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/", state
    finally:
        srv.shutdown()
        srv.server_close()


# --- hostile bundle tars (issue 19 items 5 and 7): validly signed, malformed inside ----------


def _octal(n: int, width: int = 12) -> bytes:
    return f"{n:0{width - 1}o}".encode() + b"\0"


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def regular_member(name: str, data: bytes) -> bytes:
    """One regular tar member (PAX header + data), exactly as a tar writer makes it."""
    import tarfile

    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    return ti.tobuf(tarfile.PAX_FORMAT) + _padded(data)


def sparse_member(name: str, claimed: int, stored: bytes = b"\x1c" * 512) -> bytes:
    """A GNU (old format) sparse member: ``stored`` is all it holds, ``claimed`` bytes is
    what it reads as (the rest are holes, read as zeros). Python's tarfile cannot write one,
    so the header's sparse map (offset 386) and real size (offset 483) are set by hand."""
    import tarfile

    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode = tarfile.GNUTYPE_SPARSE, len(stored), 0o644
    h = bytearray(ti.tobuf(tarfile.GNU_FORMAT))
    h[386:410] = _octal(0) + _octal(len(stored))  # one data span at offset 0
    h[482] = 0  # no extension headers
    h[483:495] = _octal(claimed)
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}".encode() + b"\0 "
    return bytes(h) + _padded(stored)


def tar_of(*members: bytes) -> bytes:
    """Members as given (order, names and duplicates kept), then the end-of-archive blocks."""
    return b"".join(members) + b"\0" * 1024


def bundle_members(bundle: Any, *, manifest: bytes | None = None) -> dict[str, bytes]:
    """The three member payloads of ``bundle`` (an edge_agent Bundle), the manifest
    optionally replaced by ``manifest`` (raw JSON, validated by nobody)."""
    files: dict[str, bytes] = bundle.files()
    if manifest is not None:
        files["manifest.json"] = manifest
    return files


def sparse_bundle_tar(bundle: Any, *, claimed: int = 511 << 20, copies: int = 3) -> bytes:
    """The issue's 10 KB tar: ``copies`` GNU sparse members named ``./model.tflite`` and
    ``model.tflite`` alternately, each claiming ``claimed`` bytes, then the real manifest
    and report. Read whole, each member allocates ``claimed`` bytes of zeros."""
    files = bundle_members(bundle)
    names = ("./model.tflite", "model.tflite")
    return tar_of(*(sparse_member(names[i % 2], claimed) for i in range(copies)),
                  regular_member("manifest.json", files["manifest.json"]),
                  regular_member("report.json", files["report.json"]))


def duplicate_member_tar(bundle: Any) -> bytes:
    """The real bundle with its model twice: ``model.tflite`` then ``./model.tflite``
    (a different payload: which one is "the" model depends on the reader)."""
    files = bundle_members(bundle)
    return tar_of(regular_member("model.tflite", files["model.tflite"]),
                  regular_member("./model.tflite", b"\0" * 4096),
                  regular_member("manifest.json", files["manifest.json"]),
                  regular_member("report.json", files["report.json"]))


def manifest_tar(bundle: Any, manifest: bytes) -> bytes:
    """The real bundle's model and report with ``manifest`` as its manifest.json."""
    files = bundle_members(bundle, manifest=manifest)
    return tar_of(*(regular_member(n, files[n]) for n in
                    ("model.tflite", "manifest.json", "report.json")))


def signed_tar_release(repo: FleetRepo, signers: Sequence[Signer], data: bytes, *,
                       name: str, version: int, profiles: tuple[str, ...],
                       audience: Any, chunk_size: int, uncompressed_length: int | None = None
                       ) -> tuple[str, list[bytes], dict[str, bytes]]:
    """``data`` signed as model ``name`` v``version`` by ``signers`` (for every role, so a
    threshold of legitimate keys: the bytes are what the release signed). Nothing is
    written to ``repo``. Returns the target path, its chunks and the announcement files.
    ``uncompressed_length`` signs ``data`` as a ``.tar.zst`` with that tar length."""
    from fleet.repo import target_path_for_model

    path = target_path_for_model(name, version, compressed=uncompressed_length is not None)
    spec = TargetSpec("model", audience, name, version, profiles,
                      ChunkPlan.for_data(data, chunk_size),
                      uncompressed_length=uncompressed_length)
    files = forge_release(repo, target=(path, data, spec), targets_by=signers,
                          snapshot_by=signers, timestamp_by=signers)
    assert spec.chunks is not None
    return path, chunk_payloads(data, spec.chunks), files
