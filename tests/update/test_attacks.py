"""One test per attack on the update channel (TUF's list plus ours), real agent + broker.

Each asserts the outcome, its code and the reason named in the event, and that nothing else
moved (:func:`update_helpers.assert_nothing_moved`): the store holds exactly the versions it
held before, the old model still serves (in memory and in ``active.json``), and the trusted
metadata on the device is byte for byte what it was, except roles the attack presented with
valid signatures, which are then exactly those signed bytes (never anything past them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from update_forge import announce, chunk_payloads, forge_release, republish
from update_helpers import (
    CHUNK,
    DEVICE,
    Bundles,
    Device,
    DeviceFactory,
    DeviceSnapshot,
    Fleet,
    assert_nothing_moved,
    role_files,
    signed_release,
)

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.update.state import Outcome
from edge_agent.update.wire import Audience, TargetSpec, announce_topic
from fleet.publish import sign_bundle
from fleet.repo import target_path_for_model

TOPIC = announce_topic(DEVICE)
ME = Audience((DEVICE,), ())


def rejected(dev: Device, before: DeviceSnapshot, code: str, reason: str, *,
             accepted: dict[str, bytes] | None = None) -> Outcome:
    """The next outcome is a rejection with ``code`` naming ``reason``, and nothing moved:
    no version installed, the same version serving, the trusted metadata byte-identical
    except the roles in ``accepted`` (validly signed: now trusted, exactly those bytes)."""
    out = dev.outcome(before.outcomes)
    assert (out.result, out.code) == ("rejected", code), out
    assert reason in out.reason, out.reason
    ev = dev.events_of("update.rejected")[-1]
    assert (ev.data["code"], ev.data["reason"]) == (code, out.reason), ev.data
    assert_nothing_moved(dev, before, accepted=accepted)
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
    before = dev.snapshot()
    path, data, spec = v3_target(bundles)
    files = forge_release(fleet.repo, target=(path, data, spec), targets_by=[], snapshot_by=[],
                          timestamp_by=[])
    assert spec.chunks is not None
    announce(fleet.broker_url, TOPIC, path, files, chunks=chunk_payloads(data, spec.chunks),
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, before, "untrusted", "timestamp was signed by 0/1 keys")


def test_signature_by_unknown_key_is_rejected(fleet: Fleet, bundles: Bundles,
                                              start_device: DeviceFactory) -> None:
    """The attacker holds the online snapshot/timestamp keys, signs targets with their own."""
    dev = start_device()
    before = dev.snapshot()
    path, data, spec = v3_target(bundles)
    files = forge_release(fleet.repo, target=(path, data, spec),
                          targets_by=fleet.signers("rogue"),
                          snapshot_by=fleet.signers("snapshot"),
                          timestamp_by=fleet.signers("timestamp"))
    announce(fleet.broker_url, TOPIC, path, files)
    # timestamp and snapshot carry valid signatures of the (stolen) online keys: TUF
    # trusts them; targets, root and the store must not move
    rejected(dev, before, "untrusted", "targets was signed by 0/2 keys",
             accepted=role_files(files, "timestamp", "snapshot"))


def test_fewer_targets_signatures_than_threshold_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    path, data, spec = v3_target(bundles)
    files = forge_release(fleet.repo, target=(path, data, spec),
                          targets_by=fleet.signers("targets-a"),  # threshold is 2
                          snapshot_by=fleet.signers("snapshot"),
                          timestamp_by=fleet.signers("timestamp"))
    announce(fleet.broker_url, TOPIC, path, files)
    rejected(dev, before, "untrusted", "targets was signed by 1/2 keys",
             accepted=role_files(files, "timestamp", "snapshot"))


def test_root_rotation_with_fewer_signatures_than_threshold_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory, tmp_path: Any) -> None:
    """One stolen root key cannot hand the timestamp role to the attacker (root is 2-of-2)."""
    import shutil

    from fleet.repo import FleetRepo, ThresholdError

    dev = start_device()
    before = dev.snapshot()
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
    rejected(dev, before, "untrusted", "root was signed by 1/2 keys")


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
    before = dev.snapshot()
    path, data, spec, files = _signed_v3(fleet, bundles)
    evil = bytearray(data)
    evil[len(data) // 2] ^= 0xFF  # inside model.tflite
    announce(fleet.broker_url, TOPIC, path, files, chunks=_chunks_of(bytes(evil), spec),
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, before, "mismatch", "is not the signed",
             accepted=signed_release(fleet.repo))


def test_tampered_manifest_is_rejected(fleet: Fleet, bundles: Bundles,
                                       start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    path, data, spec, files = _signed_v3(fleet, bundles)
    evil = data.replace(b'"generic-x86_64"', b'"generic-x86_65"', 1)
    assert evil != data and len(evil) == len(data)
    announce(fleet.broker_url, TOPIC, path, files, chunks=_chunks_of(evil, spec),
             sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, before, "mismatch", "(tampered)", accepted=signed_release(fleet.repo))


def _announce_with_last_chunk(fleet: Fleet, bundles: Bundles,
                              cut: Callable[[bytes], bytes]) -> None:
    """Announce a validly signed v3 whose last chunk carries ``cut(its real data)`` (with a
    header hash of its own, so only the signed plan can tell)."""
    from edge_agent.update.wire import encode_chunk

    path, data, spec, files = _signed_v3(fleet, bundles)
    assert spec.chunks is not None
    chunks = _chunks_of(data, spec)
    last = spec.chunks.count - 1
    off, size = spec.chunks.span(last)
    chunks[last] = encode_chunk(last, spec.chunks.count, spec.chunks.length,
                                cut(data[off:off + size]))
    announce(fleet.broker_url, TOPIC, path, files, chunks=chunks,
             sha256=hashlib.sha256(data).hexdigest())


def test_truncated_chunk_is_rejected(fleet: Fleet, bundles: Bundles,
                                     start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    _announce_with_last_chunk(fleet, bundles, lambda real: real[:len(real) // 2])
    rejected(dev, before, "mismatch", "truncated", accepted=signed_release(fleet.repo))


def test_endless_data_from_a_mirror_is_cut_at_the_signed_length(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    from update_forge import evil_http_server

    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="endless") as (url, _):
        dev = start_device(mirror_allowlist=[url])  # the device's own config trusts it
        before = dev.snapshot()
        path, _, _, files = _signed_v3(fleet, bundles)
        announce(fleet.broker_url, TOPIC, path, files, mirrors=(url,))
        rejected(dev, before, "mismatch", "more bytes than the signed length",
                 accepted=signed_release(fleet.repo))


def test_oversized_chunk_is_rejected(fleet: Fleet, bundles: Bundles,
                                     start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    _announce_with_last_chunk(fleet, bundles, lambda real: real + b"\0" * 100)
    rejected(dev, before, "mismatch", "oversized (endless data)",
             accepted=signed_release(fleet.repo))


# --- versions, freshness, consistency ----------------------------------------------------------


def test_older_version_is_refused(fleet: Fleet, bundles: Bundles,
                                  start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.outcome(n).result == "committed"
    before = dev.snapshot()
    assert (before.installed, before.serving) == (("1", "2"), 2)
    fleet.publish(bundles.v1)  # validly signed, but older than what is installed
    rejected(dev, before, "version", "v1 is not newer than the installed v2",
             accepted=signed_release(fleet.repo))
    assert dev.trusted()["targets"] == before.trusted["targets"] + 1


def test_replayed_earlier_announcement_is_rejected(fleet: Fleet, bundles: Bundles,
                                                   start_device: DeviceFactory) -> None:
    dev = start_device()
    n = dev.mark()
    old = fleet.publish(bundles.v2).announcement
    assert dev.outcome(n).result == "committed"
    n = dev.mark()
    fleet.publish(bundles.v3)
    assert dev.outcome(n).result == "committed"
    before = dev.snapshot()
    assert before.serving == 3
    republish(fleet.broker_url, TOPIC, old)  # byte-identical replay: already settled
    republish(fleet.broker_url, TOPIC, old.replace(b'"published_at":', b'"published_at": '))
    rejected(dev, before, "rollback", "New timestamp version 1 must be >= 2")
    # the identical replay produced no outcome at all: the one outcome is the altered one's
    assert len(dev.svc.outcomes) == before.outcomes + 1


def test_expired_metadata_is_rejected(fleet: Fleet, bundles: Bundles,
                                      start_device: DeviceFactory) -> None:
    """Freeze attack: a validly signed but stale view of the repository."""
    dev = start_device()
    before = dev.snapshot()
    past = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    path, data, spec = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                   chunk_size=CHUNK, expires={"timestamp": past})
    announce(fleet.broker_url, TOPIC, path, fleet.repo.announce_files(),
             chunks=_chunks_of(data, spec), sha256=hashlib.sha256(data).hexdigest())
    rejected(dev, before, "expired", "timestamp.json is expired")


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
    before = dev.snapshot()
    announce(fleet.broker_url, TOPIC, path, files)
    # release 2's timestamp and snapshot are genuine; its targets is swapped for release 1's
    rejected(dev, before, "mismatch", "length or hash mismatch",
             accepted=role_files(fleet.repo.announce_files(), "timestamp", "snapshot"))


# --- this device -----------------------------------------------------------------------------


def test_bundle_for_another_profile_is_refused_before_download(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    fleet.publish(bundles.v3_rpi4)
    rejected(dev, before, "audience", "signed for profiles ['rpi4']; this device is "
                                      "'generic-x86_64'", accepted=signed_release(fleet.repo))
    assert not dev.events_of("update.downloaded")


def test_update_signed_for_other_devices_is_refused(fleet: Fleet, bundles: Bundles,
                                                    start_device: DeviceFactory) -> None:
    """A broker re-routing another device's update to this one gains nothing."""
    dev = start_device()
    before = dev.snapshot()
    pub = fleet.publish(bundles.v2, audience=Audience(("dev2",), ()))
    republish(fleet.broker_url, TOPIC, pub.announcement)
    rejected(dev, before, "audience", "signed for devices ['dev2']",
             accepted=signed_release(fleet.repo))
    assert not dev.events_of("update.downloaded")


def test_model_failing_golden_vectors_is_rejected(fleet: Fleet, bundles: Bundles,
                                                  start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    fleet.publish(bundles.v3_golden_bad)
    rejected(dev, before, "golden_mismatch", "golden vector 0: output 'output_0' differs",
             accepted=signed_release(fleet.repo))


def test_model_failing_to_load_is_rejected(fleet: Fleet, bundles: Bundles,
                                           start_device: DeviceFactory) -> None:
    dev = start_device()
    before = dev.snapshot()
    fleet.publish(bundles.v3_broken)
    rejected(dev, before, "load_failed", "could not load the model",
             accepted=signed_release(fleet.repo))
