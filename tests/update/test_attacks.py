"""One test per attack on the update channel (TUF's list plus ours), real agent + broker.

Each asserts the outcome, the reason named in the event, and that nothing else moved:
the old model still serves (in memory and in ``active.json``), no version was
installed, and trusted metadata did not advance past what was legitimately signed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from update_forge import announce, chunk_payloads, forge_release, republish
from update_helpers import CHUNK, DEVICE, Bundles, DeviceFactory, Fleet

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.update.wire import Audience, TargetSpec, announce_topic
from fleet.publish import sign_bundle
from fleet.repo import target_path_for_model

TOPIC = announce_topic(DEVICE)
ME = Audience((DEVICE,), ())


def rejected(dev: Any, after: int, code: str, reason: str, *, serving: int = 1) -> Any:
    """The next outcome is a rejection naming ``reason``; the old model is untouched."""
    out = dev.outcome(after)
    assert (out.result, out.code) == ("rejected", code), out
    assert reason in out.reason, out.reason
    ev = dev.events_of("update.rejected")[-1]
    assert ev.data["code"] == code and reason in ev.data["reason"]
    assert dev.serving() == serving and dev.on_disk() == serving
    assert dev.agent.store.versions("digits") == list(range(1, serving + 1)) or \
        serving in dev.agent.store.versions("digits")
    assert dev.svc.status()["phase"] == "idle"
    return out


def v3_target(bundles: Bundles) -> tuple[str, bytes, TargetSpec]:
    from edge_agent.update.wire import ChunkPlan

    b = read_bundle(bundles.v3)
    data = tar_bytes(b)
    spec = TargetSpec("model", ME, "digits", 3, b.manifest.target_profiles,
                      ChunkPlan.for_data(data, CHUNK))
    return target_path_for_model("digits", 3), data, spec


# --- signatures ----------------------------------------------------------------------------


def test_unsigned_bundle_is_rejected(fleet: Fleet, bundles: Bundles,
                                     start_device: DeviceFactory) -> None:
    dev = start_device()
    before, n = dev.trusted(), dev.mark()
    path, data, spec = v3_target(bundles)
    files = forge_release(fleet.repo, target=(path, data, spec), targets_by=[], snapshot_by=[],
                          timestamp_by=[])
    assert spec.chunks is not None
    announce(fleet.broker_url, TOPIC, path, files, chunks=chunk_payloads(data, spec.chunks),
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, n, "untrusted", "timestamp was signed by 0/1 keys")
    assert dev.trusted() == before


def test_signature_by_unknown_key_is_rejected(fleet: Fleet, bundles: Bundles,
                                              start_device: DeviceFactory) -> None:
    """The attacker holds the online snapshot/timestamp keys, signs targets with their own."""
    dev = start_device()
    before, n = dev.trusted(), dev.mark()
    path, data, spec = v3_target(bundles)
    files = forge_release(fleet.repo, target=(path, data, spec),
                          targets_by=fleet.signers("rogue"),
                          snapshot_by=fleet.signers("snapshot"),
                          timestamp_by=fleet.signers("timestamp"))
    announce(fleet.broker_url, TOPIC, path, files)
    rejected(dev, n, "untrusted", "targets was signed by 0/2 keys")
    assert dev.trusted()["targets"] == before["targets"] and dev.trusted()["root"] == 1


def test_fewer_targets_signatures_than_threshold_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    before, n = dev.trusted(), dev.mark()
    path, data, spec = v3_target(bundles)
    files = forge_release(fleet.repo, target=(path, data, spec),
                          targets_by=fleet.signers("targets-a"),  # threshold is 2
                          snapshot_by=fleet.signers("snapshot"),
                          timestamp_by=fleet.signers("timestamp"))
    announce(fleet.broker_url, TOPIC, path, files)
    rejected(dev, n, "untrusted", "targets was signed by 1/2 keys")
    assert dev.trusted()["targets"] == before["targets"]


def test_root_rotation_with_fewer_signatures_than_threshold_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory, tmp_path: Any) -> None:
    """One stolen root key cannot hand the timestamp role to the attacker (root is 2-of-2)."""
    import shutil

    from fleet.repo import FleetRepo, ThresholdError

    dev = start_device()
    before, n = dev.trusted(), dev.mark()
    evil = FleetRepo(shutil.copytree(fleet.repo.path, tmp_path / "evil"))
    try:
        evil.rotate("timestamp", add=[fleet.keys["rogue"].public],
                    signers=fleet.signers("root-a"))
        raise AssertionError("FleetRepo must refuse to write an under-signed root")
    except ThresholdError:
        pass
    from tuf.api.metadata import Metadata, Root

    root = Metadata[Root].from_bytes(evil.root_bytes(1))
    root.signed.version = 2
    root.signed.add_key(fleet.keys["rogue"].public, "timestamp")
    root.signatures.clear()
    root.sign(fleet.keys["root-a"].signer)
    files = forge_release(fleet.repo, target=v3_target(bundles), targets_by=[],
                          snapshot_by=[], timestamp_by=fleet.signers("rogue"))
    from tuf.api.serialization.json import JSONSerializer

    files["metadata/2.root.json"] = root.to_bytes(JSONSerializer(compact=True))
    announce(fleet.broker_url, TOPIC, target_path_for_model("digits", 3), files)
    rejected(dev, n, "untrusted", "root was signed by 1/2 keys")
    assert dev.trusted() == before


# --- target bytes ---------------------------------------------------------------------------


def _signed_v3(fleet: Fleet, bundles: Bundles) -> tuple[str, bytes, TargetSpec, dict]:  # type: ignore[type-arg]
    path, data, spec = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                   chunk_size=CHUNK)
    return path, data, spec, fleet.repo.announce_files()


def _chunks_of(data: bytes, spec: TargetSpec) -> list[bytes]:
    assert spec.chunks is not None
    return chunk_payloads(data, spec.chunks)


def test_tampered_model_bytes_are_rejected(fleet: Fleet, bundles: Bundles,
                                           start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    path, data, spec, files = _signed_v3(fleet, bundles)
    evil = bytearray(data)
    evil[len(data) // 2] ^= 0xFF  # inside model.tflite
    announce(fleet.broker_url, TOPIC, path, files, chunks=_chunks_of(bytes(evil), spec),
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, n, "mismatch", "is not the signed")
    assert dev.agent.store.versions("digits") == [1]


def test_tampered_manifest_is_rejected(fleet: Fleet, bundles: Bundles,
                                       start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    path, data, spec, files = _signed_v3(fleet, bundles)
    evil = data.replace(b'"generic-x86_64"', b'"generic-x86_65"', 1)
    assert evil != data and len(evil) == len(data)
    announce(fleet.broker_url, TOPIC, path, files, chunks=_chunks_of(evil, spec),
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, n, "mismatch", "(tampered)")


def test_truncated_chunk_is_rejected(fleet: Fleet, bundles: Bundles,
                                     start_device: DeviceFactory) -> None:
    from edge_agent.update.wire import encode_chunk

    dev = start_device()
    n = dev.mark()
    path, data, spec, files = _signed_v3(fleet, bundles)
    assert spec.chunks is not None
    chunks = _chunks_of(data, spec)
    last = spec.chunks.count - 1
    off, size = spec.chunks.span(last)
    chunks[last] = encode_chunk(last, spec.chunks.count, spec.chunks.length,
                                data[off:off + size // 2])
    announce(fleet.broker_url, TOPIC, path, files, chunks=chunks,
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, n, "mismatch", "truncated")


def test_endless_data_from_a_mirror_is_cut_at_the_signed_length(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    from update_forge import evil_http_server

    dev = start_device()
    n = dev.mark()
    path, data, _, files = _signed_v3(fleet, bundles)
    with evil_http_server(data, mode="endless") as (url, _):
        announce(fleet.broker_url, TOPIC, path, files, mirrors=(url,))
        rejected(dev, n, "mismatch", "more bytes than the signed length")


def test_oversized_chunk_is_rejected(fleet: Fleet, bundles: Bundles,
                                     start_device: DeviceFactory) -> None:
    from edge_agent.update.wire import encode_chunk

    dev = start_device()
    n = dev.mark()
    path, data, spec, files = _signed_v3(fleet, bundles)
    assert spec.chunks is not None
    chunks = _chunks_of(data, spec)
    last = spec.chunks.count - 1
    off, size = spec.chunks.span(last)
    chunks[last] = encode_chunk(last, spec.chunks.count, spec.chunks.length,
                                data[off:off + size] + b"\0" * 100)
    announce(fleet.broker_url, TOPIC, path, files, chunks=chunks,
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, n, "mismatch", "oversized (endless data)")


# --- versions, freshness, consistency ----------------------------------------------------------


def test_older_version_is_refused(fleet: Fleet, bundles: Bundles,
                                  start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.outcome(n).result == "committed"
    n, before = dev.mark(), dev.trusted()
    fleet.publish(bundles.v1)  # validly signed, but older than what is installed
    rejected(dev, n, "version", "v1 is not newer than the installed v2", serving=2)
    assert dev.trusted()["targets"] == before["targets"] + 1  # legitimately signed metadata


def test_replayed_earlier_announcement_is_rejected(fleet: Fleet, bundles: Bundles,
                                                   start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    old = fleet.publish(bundles.v2).announcement
    assert dev.outcome(n).result == "committed"
    n = dev.mark()
    fleet.publish(bundles.v3)
    assert dev.outcome(n).result == "committed"
    before, n = dev.trusted(), dev.mark()
    republish(fleet.broker_url, TOPIC, old)  # byte-identical replay: already settled
    republish(fleet.broker_url, TOPIC, old.replace(b'"published_at":', b'"published_at": '))
    rejected(dev, n, "rollback", "New timestamp version 1 must be >= 2", serving=3)
    assert dev.trusted() == before
    assert len(dev.svc.outcomes) == n + 1  # the identical replay changed nothing at all


def test_expired_metadata_is_rejected(fleet: Fleet, bundles: Bundles,
                                      start_device: DeviceFactory) -> None:
    """Freeze attack: a validly signed but stale view of the repository."""
    dev = start_device()
    before, n = dev.trusted(), dev.mark()
    past = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    path, data, spec = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                   chunk_size=CHUNK, expires={"timestamp": past})
    announce(fleet.broker_url, TOPIC, path, fleet.repo.announce_files(),
             chunks=_chunks_of(data, spec), sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, n, "expired", "timestamp.json is expired")
    assert dev.trusted() == before


def test_mix_and_match_is_rejected(fleet: Fleet, bundles: Bundles,
                                   start_device: DeviceFactory) -> None:
    """Targets metadata of one release served under the snapshot of another."""
    dev = start_device()
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.outcome(n).result == "committed"
    old_targets = fleet.repo.announce_files()["metadata/1.targets.json"]
    path, _, _, files = _signed_v3(fleet, bundles)  # release 2, never announced
    files["metadata/2.targets.json"] = old_targets
    before, n = dev.trusted(), dev.mark()
    announce(fleet.broker_url, TOPIC, path, files)
    rejected(dev, n, "mismatch", "length or hash mismatch", serving=2)
    assert dev.trusted()["targets"] == before["targets"]


# --- this device -----------------------------------------------------------------------------


def test_bundle_for_another_profile_is_refused_before_download(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    fleet.publish(bundles.v3_rpi4)
    rejected(dev, n, "audience", "signed for profiles ['rpi4']; this device is "
                                 "'generic-x86_64'")
    assert not dev.events_of("update.downloaded")


def test_update_signed_for_other_devices_is_refused(fleet: Fleet, bundles: Bundles,
                                                    start_device: DeviceFactory) -> None:
    """A broker re-routing another device's update to this one gains nothing."""
    dev = start_device()
    n = dev.mark()
    pub = fleet.publish(bundles.v2, audience=Audience(("dev2",), ()))
    republish(fleet.broker_url, TOPIC, pub.announcement)
    rejected(dev, n, "audience", "signed for devices ['dev2']")


def test_model_failing_golden_vectors_is_rejected(fleet: Fleet, bundles: Bundles,
                                                  start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    fleet.publish(bundles.v3_golden_bad)
    rejected(dev, n, "golden_mismatch", "golden vector 0: output differs")
    assert dev.agent.store.versions("digits") == [1]


def test_model_failing_to_load_is_rejected(fleet: Fleet, bundles: Bundles,
                                           start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    fleet.publish(bundles.v3_broken)
    rejected(dev, n, "load_failed", "could not load the model")
    assert dev.agent.store.versions("digits") == [1]
