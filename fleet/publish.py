"""``edge-fleet publish``: sign a bundle into the repository and push it to devices.

::

    edge-fleet publish BUNDLE --repo REPO --key K… --broker URL (--device ID… | --group G)
                       [--http-url URL] [--chunk-size BYTES] [--no-mqtt-chunks]
                       [--signed-metadata DIR] [broker options]
                       [--probation-min-requests N] [--probation-min-clients N]
                       [--shadow DURATION|N [--gate EXPR]]
    edge-fleet rollback --repo REPO --key K… --broker URL --model NAME [--to-version N]
                       [--from-version N] [--expires-in SECONDS]
                       (--device ID… | --group G) [broker options]

Broker options (TLS, client certificate, user and password file, client id, topic
prefix) are those of every edge-fleet command: :mod:`fleet.broker`.

``publish`` (1) adds the bundle (deterministic ``.tar``) to the TUF repository as a
target whose signed entry names the model, version, profiles, audience and the sha256
of every chunk, and releases new targets/snapshot/timestamp versions signed with the
given keys (threshold-checked) — or, with ``--signed-metadata``, takes metadata that
was signed elsewhere; (2) publishes the target as retained, fixed-size chunks on
``edge/blobs/<sha256>/<i>`` (each chunk carries its own sha256; re-running resumes
an interrupted publish); (3) announces it, retained, on ``edge/<device>/update/announce``
per device or ``edge/group/<g>/update/announce``. ``--http-url`` adds a mirror
(``edge-fleet serve REPO``, any static server or an S3-compatible bucket holding
the repository) that devices use when chunks are not on MQTT or stall: it is signed
into the target's entry (``custom.edge.mirrors``), because devices ignore a mirror that
only the unsigned announcement names (unless their ``[update] mirror_allowlist`` has
it). With ``--signed-metadata`` the mirror is whatever that metadata signed.

Publishing is all or nothing towards the repository (:mod:`fleet.staged`): the release
is signed in memory first (a missing key, e.g. the timestamp key, fails with exit 2 and
the repository byte-identical), the broker must take the chunks, and the new metadata is
committed only once every announcement is acknowledged. An unreachable broker leaves the
repository unchanged. A publish cut off while announcing leaves ``<repo>/pending/``,
reported by ``edge-fleet repo status``; re-running the same publish finishes it.


``--probation-min-requests`` / ``--probation-min-clients`` sign into the release how much
evidence a device's probation needs before it may fail the new version (the device's own
``[update] probation_min_*`` values stay the floor).

``rollback`` signs a command target (``commands/<id>.json``) telling devices serving
``--from-version`` (default: the newest version of the model in the repository) to serve
an earlier installed version, until ``--expires-in`` (default 24 h), once. Devices refuse
it unless it verifies like any update, and refuse a replay (same id), an expired command
and one signed against another version. The next ``publish`` drops every command from
the targets metadata.

Size: over ~400 lines: publish and rollback share the all-or-nothing delivery (stage →
chunks → pending → announce → commit) and its argument parsing; the repository itself is
:mod:`fleet.repo`, the pending state :mod:`fleet.staged`, broker options :mod:`fleet.broker`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Targets

from edge_agent import bundle_zstd
from edge_agent.bundle import Bundle, read_bundle, tar_bytes
from edge_agent.errors import BadInputError, TransportError, UpdateError
from edge_agent.fsutil import atomic_write_bytes
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import FleetTopics
from edge_agent.update.wire import (
    Announcement,
    Audience,
    ChunkPlan,
    Command,
    ProbationTerms,
    ShadowTerms,
    TargetSpec,
    encode_chunk,
    parse_target_spec,
)
from fleet import device_keys, keys, seal
from fleet.broker import add_broker_args, as_config, broker_config
from fleet.repo import FleetRepo, target_path_for_model
from fleet.shadow_args import DEFAULT_GATE, shadow_terms
from fleet.staged import PENDING_DIR, StagedRelease

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 256 * 1024  # bytes; must stay under the device's mqtt.max_incoming_bytes


@dataclass(frozen=True)
class Published:
    target: str
    sha256: str
    length: int
    chunks: int
    topics: tuple[str, ...]
    announcement: bytes
    uncompressed_length: int | None = None  # a .tar.zst target: its tar's bytes


def audience_topics(audience: Audience, prefix: str = "edge") -> tuple[str, ...]:
    topics = FleetTopics(prefix)
    return (*(topics.announce(d) for d in audience.devices),
            *(topics.group_announce(g) for g in audience.groups))


class Broker:
    """A short-lived workstation connection: QoS 1 publishes, waits for every PUBACK.

    ``broker``: the validated connection settings (:func:`fleet.broker.broker_config`) or a
    plain URL. Raises MqttConnectError when the broker cannot be reached or refuses us.
    """

    def __init__(self, broker: MqttConfig | str, *, client_id: str | None = None,
                 connect_timeout_s: float = 10.0) -> None:
        self.config = replace(as_config(broker), max_inflight=100)
        self.client = MqttClient(config=self.config,
                                 client_id=client_id or f"edge-fleet-{uuid.uuid4().hex[:8]}")
        self._pending = 0
        self._failed: list[int] = []
        self._lost = False  # the connection dropped: unacknowledged publishes are lost
        self._cond = threading.Condition()
        self.client.add_listener(on_disconnect=self._on_lost)
        self.client.connect(connect_timeout_s)

    def _on_lost(self) -> None:
        # the client reconnects by itself, but PUBACKs of the lost connection never come:
        # flush() must fail now (the caller re-publishes), not wait out its timeout
        with self._cond:
            self._lost = True
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        def acked(rc: int) -> None:
            with self._cond:
                self._pending -= 1
                if rc >= 0x80:  # MQTT 5: < 0x80 is success (0x10 = no subscribers yet)
                    self._failed.append(rc)
                self._cond.notify_all()

        with self._cond:
            self._pending += 1
        if not self.client.publish(topic, payload, 1, retain, on_ack=acked):
            with self._cond:
                self._pending -= 1
            raise TransportError(f"broker {self.config.url}: not connected; publish of {topic} "
                                 "failed (re-run to resume)")

    def flush(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending > 0:
                if self._lost:
                    raise TransportError(f"broker {self.config.url}: connection lost with "
                                         f"{self._pending} publishes unacknowledged")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"broker {self.config.url}: {self._pending} publishes "
                                         f"unacknowledged after {timeout_s:g} s")
                self._cond.wait(min(left, 0.5))
            if self._failed:
                raise TransportError(f"broker refused {len(self._failed)} publishes "
                                     f"(reason codes {sorted(set(self._failed))})")

    def close(self) -> None:
        self.client.stop()


def publish_chunks(broker: Link, data: bytes, plan: ChunkPlan, sha256: str,
                   prefix: str = "edge") -> None:
    topics = FleetTopics(prefix)
    for i in range(plan.count):
        off, n = plan.span(i)
        broker.publish(topics.chunk(sha256, i),
                       encode_chunk(i, plan.count, plan.length, data[off:off + n]))
    broker.flush()


def announce(broker: Link, topics: Sequence[str], ann: Announcement) -> bytes:
    payload = ann.to_bytes()
    for t in topics:
        broker.publish(t, payload)
    broker.flush()
    return payload


class Link(Protocol):
    """What delivery needs from a broker connection (:class:`Broker`; tests inject faults)."""

    config: MqttConfig

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None: ...
    def flush(self, timeout_s: float = 120.0) -> None: ...
    def close(self) -> None: ...


Connect = Callable[[MqttConfig | str], Link]


class FileLink:
    """A :class:`Link` that keeps the announcements instead of publishing them
    (``edge-fleet rollback --out FILE``: the signed command is carried to a device's
    dashboard, docs/dashboard.md, or to ``POST /v1/agent/update/announce``)."""

    def __init__(self, broker: MqttConfig | str) -> None:
        self.config = as_config(broker)
        self.payloads: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        self.payloads.append(payload)

    def flush(self, timeout_s: float = 120.0) -> None:
        pass

    def close(self) -> None:
        pass


def _bundle_target(bundle_path: Path, audience: Audience, chunk_size: int,
                   probation: ProbationTerms | None = None,
                   mirrors: tuple[str, ...] = (),
                   shadow: ShadowTerms | None = None) -> tuple[str, bytes, TargetSpec]:
    bad = [m for m in mirrors if not re.match(r"^https?://[^\s]+$", m)]
    if bad:
        raise BadInputError(f"--http-url {bad[0]!r}: expected an http:// or https:// URL")
    ulen: int | None = None
    if seal.is_sealed_file(bundle_path):  # edge-fleet encrypt's output: signed as it is
        name, version, profiles, data = seal.sealed_header(bundle_path)
    else:
        bundle = read_bundle(bundle_path)
        name, version, profiles = (bundle.name, bundle.version,
                                   bundle.manifest.target_profiles)
        data, ulen = target_bytes(bundle_path, bundle)
    if not profiles:
        raise BadInputError(f"{bundle_path}: manifest lists no target_profiles; devices "
                            "refuse a bundle that does not name their profile")
    spec = TargetSpec("model", audience, name, version, tuple(profiles),
                      ChunkPlan.for_data(data, chunk_size), probation, mirrors, shadow, ulen)
    return target_path_for_model(name, version, compressed=ulen is not None), data, spec


def target_bytes(bundle_path: Path, bundle: Bundle) -> tuple[bytes, int | None]:
    """The bytes devices download: the deterministic tar, or for a ``.tar.zst`` input that
    tar in one zstd frame, with the tar's length (signed as ``uncompressed_length``)."""
    tar = tar_bytes(bundle)
    if bundle_path.name.endswith(bundle_zstd.SUFFIX):
        return bundle_zstd.compress(tar), len(tar)
    return tar, None


def sign_bundle(repo: FleetRepo, bundle_path: Path, signers: Sequence[Signer], *,
                audience: Audience, chunk_size: int = DEFAULT_CHUNK,
                expires: dict[str, datetime] | None = None,
                probation: ProbationTerms | None = None,
                mirrors: tuple[str, ...] = (),
                shadow: ShadowTerms | None = None) -> tuple[str, bytes, TargetSpec]:
    """Add the bundle to the repository and release signed metadata; returns path, tar, spec.

    (Signing on an offline copy: nothing is announced, so the release is committed at once.)
    The release drops every earlier command from the targets metadata. ``mirrors`` are
    signed into the target's entry: devices may fetch it from them.
    """
    path, data, spec = _bundle_target(bundle_path, audience, chunk_size, probation, mirrors,
                                      shadow)
    repo.add_targets({path: (data, spec)}, signers, expires=expires)
    return path, data, spec


def _spec_in(staged: StagedRelease, path: str) -> TargetSpec:
    name = next(n for n in staged.metadata if n.endswith(".targets.json"))
    tf = Metadata[Targets].from_bytes(staged.metadata[name]).signed.targets[path]
    return parse_target_spec(tf.custom, tf.length, path)


def _stage(repo: FleetRepo, entries: dict[str, tuple[bytes, TargetSpec]],
           signers: Sequence[Signer]) -> StagedRelease:
    """Resume the pending release if it is this one, else commit it and sign a new one.

    A pending release may already be on devices, so its versions are never reused.
    """
    pending = repo.pending()
    wanted = {p: hashlib.sha256(d).hexdigest() for p, (d, _) in entries.items()}
    if pending is not None and pending.targets == wanted:
        log.warning("resuming the interrupted publish of %s", pending.describe())
        return pending
    if pending is not None:
        log.warning("committing the interrupted publish of %s first", pending.describe())
        repo.commit(pending)
    return repo.stage_targets(entries, signers)


def _deliver(repo: FleetRepo | None, staged: StagedRelease | None, conn: Link,
             send: Callable[[], None], topics: Sequence[str], ann: Announcement) -> bytes:
    """Chunks (``send``), then pending, then announcements, then commit: all or nothing.

    Until the first announcement leaves, nothing is written to the repository; after
    it, an interruption leaves ``pending/`` (resumable, see :mod:`fleet.staged`).
    """
    send()
    if repo is None or staged is None:
        return announce(conn, topics, ann)
    repo.stage_pending(staged)
    try:
        payload = announce(conn, topics, ann)
    except TransportError as e:
        raise TransportError(f"{e}; the release is pending in {repo.path / PENDING_DIR}: "
                             "re-run the same command to finish it (edge-fleet repo status)"
                             ) from e
    repo.commit(staged)
    return payload


def publish(repo: FleetRepo, bundle_path: Path, signers: Sequence[Signer], *,
            audience: Audience, broker: MqttConfig | str, http_url: str | None = None,
            chunk_size: int = DEFAULT_CHUNK, mqtt_chunks: bool = True,
            signed_metadata: Path | None = None, connect: Connect | None = None,
            probation: ProbationTerms | None = None,
            shadow: ShadowTerms | None = None) -> Published:
    """Sign (or take signed metadata), push chunks, announce, commit. See the module doc.

    Raises ThresholdError / KeyFileError / BadInputError (repository untouched),
    MqttConnectError / TransportError (untouched, or pending if announcing had begun).
    """
    if not audience.devices and not audience.groups:
        raise BadInputError("name at least one --device or a --group")
    staged: StagedRelease | None = None
    if signed_metadata is None:
        path, data, spec = _bundle_target(bundle_path, audience, chunk_size, probation,
                                          (http_url,) if http_url else (), shadow)
        staged = _stage(repo, {path: (data, spec)}, signers)
        spec = _spec_in(staged, path)  # a resumed release keeps its own chunk plan
        files = repo.announce_files(staged)
    else:
        path, data, spec, files = _take_signed(bundle_path, signed_metadata)
    sha = hashlib.sha256(data).hexdigest()
    ann = Announcement(path, files, chunks=mqtt_chunks and spec.chunks is not None,
                       mirrors=(http_url,) if http_url else (), published_at=time.time())
    conn = (connect or Broker)(broker)
    try:
        topics = audience_topics(audience, conn.config.topic_prefix)
        plan = spec.chunks

        def send() -> None:
            if ann.chunks and plan is not None:
                publish_chunks(conn, data, plan, sha, conn.config.topic_prefix)

        payload = _deliver(repo if staged else None, staged, conn, send, topics, ann)
    finally:
        conn.close()
    return Published(path, sha, len(data), spec.chunks.count if spec.chunks else 0,
                     topics, payload, spec.uncompressed_length)


def _take_signed(bundle_path: Path, meta_dir: Path
                 ) -> tuple[str, bytes, TargetSpec, dict[str, bytes]]:
    """Use metadata signed elsewhere: find the bundle's entry in its targets metadata."""
    data, _ = target_bytes(bundle_path, read_bundle(bundle_path))
    sha = hashlib.sha256(data).hexdigest()
    files: dict[str, bytes] = {}
    for p in sorted(meta_dir.glob("*.json")):
        if p.name != "root.json":
            files[f"metadata/{p.name}"] = p.read_bytes()
    targets = [k for k in files if k.endswith(".targets.json")]
    if not targets or "metadata/timestamp.json" not in files:
        raise BadInputError(f"{meta_dir}: expected timestamp.json, <n>.snapshot.json and "
                            "<n>.targets.json signed by the repository's keys")
    newest = max(targets, key=lambda k: int(k.split("/")[1].split(".")[0]))
    md = Metadata[Targets].from_bytes(files[newest])
    for path, tf in md.signed.targets.items():
        if tf.hashes.get("sha256") == sha:
            return path, data, parse_target_spec(tf.custom, tf.length, path), files
    raise BadInputError(f"{bundle_path}: its tar (sha256 {sha[:16]}…) is not listed in the "
                        f"signed targets metadata in {meta_dir}")


DEFAULT_COMMAND_EXPIRY_S = 24 * 3600.0


def newest_model_version(repo: FleetRepo, name: str) -> int:
    """The highest version of ``name`` in the signed targets. Raises BadInputError."""
    versions = []
    for path, tf in repo.targets().items():
        try:
            spec = parse_target_spec(tf.custom, tf.length, path)
        except UpdateError:
            continue
        if spec.kind == "model" and spec.name == name:
            versions.append(spec.version)
    if not versions:
        raise BadInputError(f"{repo.path}: no signed version of model {name!r} to roll back "
                            "from; name it with --from-version")
    return max(versions)


def rollback(repo: FleetRepo, signers: Sequence[Signer], *, audience: Audience, name: str,
             to_version: int | None, broker: MqttConfig | str, from_version: int | None = None,
             expires_in_s: float = DEFAULT_COMMAND_EXPIRY_S,
             connect: Connect | None = None) -> Published:
    """Sign a rollback command and announce it (inline: no chunks needed); all or nothing.

    The command applies only on devices serving ``from_version`` (default: the newest
    signed version of ``name``), until ``expires_in_s`` from now, once per device.
    Raises BadInputError."""
    if not expires_in_s > 0:
        raise BadInputError(f"--expires-in must be positive, got {expires_in_s:g}")
    pending = repo.pending()
    if pending is not None:  # a command is never resumed: land the interrupted release first
        repo.commit(pending)
    frm = from_version if from_version is not None else newest_model_version(repo, name)
    cmd = Command("rollback", name, to_version, uuid.uuid4().hex, from_version=frm,
                  expires_at=round(time.time() + expires_in_s, 3),
                  release=repo.latest_version("targets") + 1)
    data = cmd.to_bytes()
    path = f"commands/{cmd.id}.json"
    staged = _stage(repo, {path: (data, TargetSpec("command", audience))}, signers)
    files = repo.announce_files(staged)
    sha = hashlib.sha256(data).hexdigest()
    files[f"targets/commands/{sha}.{cmd.id}.json"] = data
    ann = Announcement(path, files, chunks=False, published_at=time.time())
    conn = (connect or Broker)(broker)
    try:
        topics = audience_topics(audience, conn.config.topic_prefix)
        payload = _deliver(repo, staged, conn, lambda: None, topics, ann)
    finally:
        conn.close()
    return Published(path, sha, len(data), 0, topics, payload)


# --- CLI ---------------------------------------------------------------------------------


def _signers(args: argparse.Namespace) -> list[Signer]:
    return list(keys.load_signers([Path(k) for k in args.key], keys.passphrase(args)))


def _audience(args: argparse.Namespace) -> Audience:
    return Audience(tuple(args.device or ()), tuple(args.group or ()))


def _common(p: argparse.ArgumentParser, *, broker_required: bool = True) -> None:
    p.add_argument("--repo", type=Path, required=True, help="repository directory")
    p.add_argument("--key", action="append", default=[], metavar="KEY",
                   help="private key file (repeat: targets, snapshot, timestamp keys)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", nargs="+", metavar="ID")
    who.add_argument("--group", action="append", metavar="G")
    keys.add_passphrase_args(p)
    add_broker_args(p, required=broker_required)


def _cmd_publish(args: argparse.Namespace) -> int:
    broker = broker_config(args)  # a bad flag fails before any key is opened
    shadow = shadow_terms(args.shadow, args.gate)  # a bad gate fails before any key is opened
    repo = FleetRepo(args.repo)
    terms = ProbationTerms(args.probation_min_requests or 0, args.probation_min_clients or 0) \
        if args.probation_min_requests or args.probation_min_clients else None
    with seal.temp_dir() as tmp:
        bundle = seal.sealed_for_publish(Path(args.bundle), args.encrypt_to, Path(tmp),
                                         args.device_keys) \
            if args.encrypt_to else Path(args.bundle)
        res = publish(repo, bundle, [] if args.signed_metadata else _signers(args),
                      audience=_audience(args), broker=broker, http_url=args.http_url,
                      chunk_size=args.chunk_size, mqtt_chunks=not args.no_mqtt_chunks,
                      signed_metadata=args.signed_metadata, probation=terms,
                      shadow=shadow)
    raw = f", {res.uncompressed_length} uncompressed" if res.uncompressed_length else ""
    print(f"published {res.target} ({res.length} bytes{raw}, sha256 {res.sha256[:16]}…, "
          f"{res.chunks} chunks) → {', '.join(res.topics)}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    if args.broker is None and args.out is None:
        raise BadInputError("name --broker URL (publish the command) or --out FILE (save it)")
    broker: MqttConfig | str = broker_config(args) if args.broker else \
        MqttConfig.from_section({"url": "mqtt://localhost", "topic_prefix": args.prefix},
                                "--out")
    res = rollback(FleetRepo(args.repo), _signers(args), audience=_audience(args),
                   name=args.model, to_version=args.to_version, broker=broker,
                   from_version=args.from_version, expires_in_s=args.expires_in,
                   connect=FileLink if args.out else None)
    if args.out:
        atomic_write_bytes(Path(args.out), res.announcement)
        print(f"signed rollback of {args.model} saved to {args.out} (command {res.target}): "
              "hand it to the device's dashboard (/ui/) or POST /v1/agent/update/announce")
        return 0
    print(f"signed rollback of {args.model} to "
          f"{'v' + str(args.to_version) if args.to_version else 'the previous version'} "
          f"(command {res.target}) → {', '.join(res.topics)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("publish", help="sign a bundle and push it to devices over MQTT",
                       description=(__doc__ or "").split("\nSize:")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory, .tar or .tar.zst (devices "
                   "download it compressed)")
    _common(p)
    p.add_argument("--http-url", metavar="URL",
                   help="mirror serving the repository (edge-fleet serve REPO); signed "
                        "into the target's entry so devices may use it")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, metavar="BYTES")
    p.add_argument("--no-mqtt-chunks", action="store_true",
                   help="announce only; devices download from --http-url")
    p.add_argument("--signed-metadata", type=Path, metavar="DIR",
                   help="take metadata signed elsewhere instead of signing here")
    p.add_argument("--probation-min-requests", type=_nonneg, metavar="N",
                   help="signed: requests a device's probation needs before it may fail v")
    p.add_argument("--probation-min-clients", type=_nonneg, metavar="N",
                   help="signed: distinct clients among them")
    p.add_argument("--shadow", metavar="DURATION|N",
                   help="signed: devices run v in the shadow of the active version on copies "
                        "of live requests (N requests, or 30s/10m/2h) and promote it only if "
                        "--gate holds (docs/update.md#shadow-evaluation)")
    p.add_argument("--gate", metavar="EXPR",
                   help=f"signed shadow gate (default {DEFAULT_GATE})")
    p.add_argument("--encrypt-to", nargs="+", action="extend", default=[], metavar="KEY",
                   help="seal the bundle for these device keys first (as edge-fleet encrypt; "
                        "a fresh content key each run: encrypt once to resume a publish); "
                        "device:ID / group:NAME from --device-keys")
    device_keys.add_registry_arg(p)
    p.set_defaults(func=_cmd_publish)
    r = sub.add_parser("rollback", help="sign a rollback command for devices")
    _common(r, broker_required=False)
    r.add_argument("--out", type=Path, metavar="FILE",
                   help="save the signed announcement to FILE instead of publishing it (for "
                        "a device's dashboard or POST /v1/agent/update/announce)")
    r.add_argument("--model", required=True)
    r.add_argument("--to-version", type=int, help="default: each device's previous version")
    r.add_argument("--from-version", type=int,
                   help="only devices serving this version roll back (default: the newest "
                        "signed version of the model)")
    r.add_argument("--expires-in", type=float, default=DEFAULT_COMMAND_EXPIRY_S,
                   metavar="SECONDS", help="devices refuse the command after this (default 24 h)")
    r.set_defaults(func=_cmd_rollback)


def _nonneg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return n
