"""Bundle reading is bounded in total (issue 19 item 5): one test per tar rule, then the
attack black-box — a validly signed 11 KB tar whose GNU sparse members claimed 1.5 GiB
drove a real agent's RSS up by 1.5 GiB; duplicate ``./model.tflite`` names made "the"
model whichever member came last.

The unit tests read tars built byte by byte (``update_forge``): each rule is refused with
a :class:`BundleMemberError` naming the member and the rule, before the member's data is
read. The black-box tests sign each hostile tar with the repository's real keys (so
signatures, length and sha256 all verify), announce it to a real ``edge-agent run`` over a
real Mosquitto, and check the outcome, its code, the agent's peak RSS (VmHWM), that v1
still serves, that nothing was installed and that the trusted metadata is exactly what the
release signed.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import json
import lzma
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from update_agentproc import AgentProcess
from update_forge import (
    announce,
    duplicate_member_tar,
    manifest_tar,
    regular_member,
    signed_tar_release,
    sparse_bundle_tar,
    sparse_member,
    tar_of,
)
from update_helpers import CHUNK, DEVICE, ME, Bundles, Fleet, assert_nothing_moved, role_files
from waiting import wait_for

from edge_agent import bundle_zstd
from edge_agent.bundle import Bundle, read_bundle, read_tar_bytes, read_tar_file, tar_bytes
from edge_agent.errors import BundleError, BundleMemberError, ManifestError
from edge_agent.update.errors import from_bundle
from edge_agent.update.wire import announce_topic

MIB = 1 << 20


@pytest.fixture(scope="module")
def v1(update_digits: Any) -> Bundle:
    return read_bundle(update_digits.bundle)


def refused(data: bytes, rule: str, member: str, **kw: Any) -> BundleMemberError:
    with pytest.raises(BundleMemberError) as ei:
        read_tar_bytes(data, "t.tar", **kw)
    e = ei.value
    assert (e.rule, e.member) == (rule, member), str(e)
    assert str(e).startswith(f"t.tar: member {member!r}: "), str(e)
    return e


# --- the rules, one test each -------------------------------------------------------------


def test_the_deterministic_tar_reads_within_exactly_its_signed_length(v1: Bundle) -> None:
    data = tar_bytes(v1)
    b = read_tar_bytes(data, "t.tar", max_bytes=len(data))
    assert (b.manifest, b.model_bytes, b.report) == (v1.manifest, v1.model_bytes, v1.report)
    refused(data, "too_large", "(tar)", max_bytes=len(data) - 1)


def test_a_gnu_sparse_member_is_refused_before_any_of_it_is_read(v1: Bundle) -> None:
    e = refused(sparse_bundle_tar(v1), "sparse", "./model.tflite")
    assert "claiming 535822336 bytes" in str(e)
    # a single sparse member claiming 4 GiB, under a bound far above it, is no different
    data = tar_of(sparse_member("model.tflite", 4 << 30))
    refused(data, "sparse", "model.tflite", max_bytes=1 << 40)


def test_reading_the_sparse_tar_allocates_nothing_like_what_it_claims(v1: Bundle) -> None:
    data = sparse_bundle_tar(v1)  # 3 members x 511 MiB claimed, 11.5 KB on the wire
    tracemalloc.start()
    try:
        with pytest.raises(BundleMemberError):
            read_tar_bytes(data, "t.tar")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * MIB, f"{peak / MIB:.1f} MiB allocated reading an {len(data)}-byte tar"


@pytest.mark.parametrize("second", ["./model.tflite", "model.tflite"])
def test_a_second_member_of_the_same_name_is_refused(v1: Bundle, second: str) -> None:
    files = v1.files()
    data = tar_of(regular_member("model.tflite", files["model.tflite"]),
                  regular_member(second, b"\0" * 4096),
                  regular_member("manifest.json", files["manifest.json"]))
    refused(data, "duplicate", second)
    refused(duplicate_member_tar(v1), "duplicate", "./model.tflite")


@pytest.mark.parametrize("name", ["evil.sh", "../model.tflite", "/model.tflite",
                                  ".model.tflite", "sub/model.tflite", "././model.tflite",
                                  "model.tflite/", "MANIFEST.JSON"])
def test_a_member_outside_the_three_bundle_files_is_refused(v1: Bundle, name: str) -> None:
    data = tar_of(regular_member(name, b"x"), *(regular_member(n, d) for n, d in
                                                 v1.files().items()))
    refused(data, "unexpected", name)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE,
                                  tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_a_member_that_is_not_a_regular_file_is_refused(v1: Bundle, kind: bytes) -> None:
    ti = tarfile.TarInfo("model.tflite")
    ti.type, ti.linkname = kind, "/etc/passwd"
    data = tar_of(ti.tobuf(tarfile.PAX_FORMAT), regular_member("manifest.json",
                                                               v1.files()["manifest.json"]))
    e = refused(data, "not_regular", "model.tflite")
    assert f"tar type {kind!r}" in str(e)


def test_a_header_claiming_more_than_the_tar_holds_is_refused_without_allocating() -> None:
    ti = tarfile.TarInfo("model.tflite")
    ti.size = 400 * MIB  # a lie: 10 KB follow
    data = ti.tobuf(tarfile.PAX_FORMAT) + b"\1" * 10_000
    tracemalloc.start()
    try:
        refused(data, "too_large", "model.tflite")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * MIB


def test_a_member_over_its_own_cap_is_refused(v1: Bundle) -> None:
    big = b" " * (16 * MIB + 1)  # manifest.json is capped at 16 MiB whatever the total
    data = tar_of(regular_member("model.tflite", v1.model_bytes),
                  regular_member("manifest.json", big))
    e = refused(data, "too_large", "manifest.json")
    assert "max 16777216 for manifest.json" in str(e)


def test_a_member_cut_short_by_the_end_of_the_tar_is_refused() -> None:
    ti = tarfile.TarInfo("model.tflite")
    ti.size = 1500
    data = ti.tobuf(tarfile.PAX_FORMAT) + b"\1" * 1000  # within the bound, short of data
    e = refused(data, "truncated", "model.tflite")
    assert "ends after" in str(e)


@pytest.mark.parametrize(("compress", "kind"), [(gzip.compress, "gzip"), (bz2.compress, "bzip2"),
                                                (lzma.compress, "xz")])
def test_a_compressed_bundle_is_refused_before_it_can_expand(v1: Bundle, compress: Any,
                                                             kind: str) -> None:
    e = refused(compress(tar_bytes(v1)), "compressed", "(stream)")
    assert f"a {kind} stream" in str(e)


def _extended_sparse_header() -> bytes:
    """A sparse member's header announcing an extension block that never comes."""
    h = bytearray(sparse_member("model.tflite", 5000)[:512])
    h[482] = 1
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}".encode() + b"\0 "
    return bytes(h)


def test_a_sparse_extension_block_cut_short_is_a_bundle_error_not_an_index_error() -> None:
    """tarfile's own header parsing raised IndexError here (an internal error, traceback)."""
    with pytest.raises(BundleError, match="not a valid bundle tar"):
        read_tar_bytes(_extended_sparse_header() + b"\x80" * 100, "t.tar")


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mangled_tar_raises_only_bundle_error(v1: Bundle, data: st.DataObject) -> None:
    seeds = [tar_bytes(v1), sparse_bundle_tar(v1), duplicate_member_tar(v1),
             _extended_sparse_header() + b"\x80" * 600]
    d = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 8))):
        d[data.draw(st.integers(0, min(len(d), 2048) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(d)))
    try:
        read_tar_bytes(bytes(d[:cut] if data.draw(st.booleans()) else d), "t.tar")
    except BundleError as e:
        assert str(e).startswith("t.tar: ") and "\n" not in str(e)


def test_a_bundle_on_disk_is_bounded_by_max_bytes(v1: Bundle, tmp_path: Path) -> None:
    from edge_agent.bundle import write_bundle

    limit = len(v1.model_bytes) - 1
    for out in (tmp_path / "d", tmp_path / "t.tar"):
        write_bundle(v1, out)
        with pytest.raises(BundleMemberError) as ei:
            read_bundle(out, max_bytes=limit)
        assert ei.value.rule == "too_large" and "max_bundle_bytes" in str(ei.value)
        assert read_bundle(out).manifest == v1.manifest
    assert read_tar_file(tmp_path / "t.tar", max_bytes=(tmp_path / "t.tar").stat().st_size)


def test_each_refusal_has_its_own_update_code() -> None:
    e = BundleMemberError("x", member="m", rule="sparse")
    assert (from_bundle(e).code, str(from_bundle(e))) == ("bundle_sparse", "x")
    assert from_bundle(ManifestError("y", field="manifest.version")).code == "manifest_invalid"
    assert from_bundle(BundleError("z")).code == "bundle"


def test_bundles_on_disk_are_read_within_agent_max_bundle_bytes(bundles: Bundles,
                                                                tmp_path: Path) -> None:
    """``run --model`` / ``[[models]]`` / the store: the same bounded reader, the bound from
    ``[agent] max_bundle_bytes``; a bundle over it is a model.load_failed event, not a read."""
    from edge_agent.app import Agent
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError

    o: dict[str, Any] = {"agent.store_dir": str(tmp_path / "store"), "agent.threads": 1,
                         "agent.profile": "generic-x86_64", "agent.probe_runtime": False,
                         "http.enabled": False, "models": [{"bundle": str(bundles.v1)}]}
    with pytest.raises(ConfigError, match=r"agent\.max_bundle_bytes: expected int >= 65536"):
        load_config(None, {**o, "agent.max_bundle_bytes": 100}, env={})
    cfg = load_config(None, o, env={"EDGE_AGENT__AGENT__MAX_BUNDLE_BYTES": "65536"})
    agent = Agent(cfg, components=())
    agent.start()
    try:
        failed = [e.message for e in agent.events if e.kind == "model.load_failed"]
        assert len(failed) == 1 and "member 'model.tflite': over the 65536 bytes" in failed[0]
        assert agent.registry.names() == [] and agent.store.names() == []
    finally:
        agent.stop()


# --- the attack, black-box: a real agent process, a real broker, signed releases -------------


@pytest.fixture
def agent_proc(tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any
               ) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path, fleet, bundles, mosquitto.url)
    yield a
    a.stop()


X = np.full((1, 8, 8, 1), 0.5, np.float32)


def serving_v1(a: AgentProcess) -> None:
    """v1 answers a real prediction over REST and is the version serving."""
    assert len(a.predict(X)["predictions"]) == 1
    assert a.serving() == 1


def release_rejected(a: AgentProcess, fleet: Fleet, data: bytes, code: str, *,
                     uncompressed_length: int | None = None) -> tuple[dict[str, Any], float]:
    """Sign ``data`` as digits v3 with the repository's keys, announce it to ``a``, wait for
    the outcome; it must be ``update.rejected`` with ``code``, and nothing may have moved
    but the trusted timestamp/snapshot/targets, now exactly what the release signed (they
    verify: it is the bundle inside that is refused). Returns the outcome and the rise of
    the agent's peak RSS (VmHWM) in MiB."""
    before = a.snapshot()
    path, chunks, files = signed_tar_release(
        fleet.repo, fleet.signers(), data, name="digits", version=3,
        profiles=("generic-x86_64",), audience=ME, chunk_size=CHUNK,
        uncompressed_length=uncompressed_length)
    hwm = a.memory_kib()["VmHWM"]
    announce(fleet.broker_url, announce_topic(DEVICE), path, files, chunks=chunks,
             sha256=hashlib.sha256(data).hexdigest())
    st = wait_for(lambda: (s := a.update_status())["phase"] == "idle" and s.get("last") and s,
                  60, "the hostile release to be decided")
    rise = (a.memory_kib()["VmHWM"] - hwm) / 1024
    last: dict[str, Any] = st["last"]
    assert (last["result"], last["code"]) == ("rejected", code), last
    events = wait_for(lambda: (ev := a.get("/v1/agent/status")["recent_events"]) and any(
        e["kind"] == "update.rejected" for e in ev) and ev, 10, "the update.rejected event")
    assert any(e["kind"] == "update.rejected" and f"({code})" in e["message"]
               for e in events), events
    assert not any(e["kind"] in ("update.activated", "update.committed") for e in events)
    assert_nothing_moved(a, before,  # type: ignore[arg-type]
                         accepted=role_files(files, "timestamp", "snapshot", "targets"))
    assert not any((a.store / "update" / "staging").glob("*")), "staging left behind"
    serving_v1(a)
    log = a.log.read_text()
    assert "Traceback" not in log and "internal" not in log, log[-3000:]
    return last, rise


@pytest.mark.parametrize(("kind", "code", "reason"), [
    ("sparse", "bundle_sparse", "member './model.tflite': a sparse file claiming 535822336"),
    ("duplicate", "bundle_duplicate", "member './model.tflite': a second model.tflite"),
])
@pytest.mark.serial
def test_signed_hostile_tar_is_rejected_with_bounded_memory_and_nothing_moves(
        kind: str, code: str, reason: str, agent_proc: AgentProcess, fleet: Fleet,
        bundles: Bundles) -> None:
    v3 = read_bundle(bundles.v3)
    data = sparse_bundle_tar(v3) if kind == "sparse" else duplicate_member_tar(v3)
    agent_proc.start()
    serving_v1(agent_proc)
    last, rise = release_rejected(agent_proc, fleet, data, code)
    assert reason in last["reason"], last["reason"]
    print(f"\n{kind}: {len(data)}-byte signed tar, agent peak RSS +{rise:.1f} MiB")
    assert rise < 30, f"peak RSS rose by {rise:.1f} MiB for a {len(data)}-byte tar"


def test_a_signed_update_over_agent_max_bundle_bytes_is_refused_before_download(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any) -> None:
    """What the store could not read back is not downloaded: the device's cap is the
    smaller of ``[update]`` and ``[agent] max_bundle_bytes``."""
    cfg = tmp_path / "agent.toml"
    a = AgentProcess(tmp_path, fleet, bundles, mosquitto.url)
    cfg.write_text(cfg.read_text().replace("[agent]\n", "[agent]\nmax_bundle_bytes = 90000\n"))
    try:
        a.start()
        data = tar_bytes(read_bundle(bundles.v3))
        v1_files = read_bundle(bundles.v1).files().values()
        assert len(data) > 90000 > sum(len(f) for f in v1_files)  # v1 itself is read
        last, _ = release_rejected(a, fleet, data, "mismatch")
        assert f"is {len(data)} bytes, over this device's cap of 90000" in last["reason"]
        kinds = [e["kind"] for e in a.get("/v1/agent/status")["recent_events"]]
        assert "update.downloading" not in kinds, kinds
    finally:
        a.stop()


# --- item 7, black-box: a signed manifest with atol NaN over wrong golden outputs -------------


def test_signed_release_with_nan_atol_over_wrong_goldens_is_rejected_manifest_invalid(
        agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles) -> None:
    """``atol: NaN`` made every golden comparison pass (``diff > NaN`` is false), so a
    release whose golden outputs are all wrong was committed."""
    v3 = read_bundle(bundles.v3)
    doc = json.loads(v3.manifest.to_json())
    for g in doc["golden"]:
        out = np.frombuffer(base64.b64decode(g["output"]["b64"]), np.int8)
        g["output"]["b64"] = base64.b64encode((out ^ 0x55).tobytes()).decode()
        g["atol"] = float("nan")
    raw = json.dumps(doc).encode()
    assert b"NaN" in raw
    agent_proc.start()
    last, _ = release_rejected(agent_proc, fleet, manifest_tar(v3, raw), "manifest_invalid")
    assert "manifest.golden[0].atol: expected a finite number >= 0" in last["reason"]
    assert "got NaN" in last["reason"]


# --- .tar.zst: one zstd frame around the tar, bounded by the signed uncompressed length ------


def zst(data: bytes) -> bytes:
    return bundle_zstd.compress(data)


def test_a_zstd_bundle_reads_within_exactly_its_uncompressed_length(v1: Bundle) -> None:
    tar = tar_bytes(v1)
    data = zst(tar)
    assert len(data) < len(tar) and zst(tar) == data  # smaller, and deterministic
    b = read_tar_bytes(data, "t.tar", max_bytes=len(tar))
    assert (b.manifest, b.model_bytes, b.report) == (v1.manifest, v1.model_bytes, v1.report)
    e = refused(data, "compressed_too_large", "(stream)", max_bytes=len(tar) - 1)
    assert f"bound of {len(tar) - 1} bytes" in str(e)


def test_a_truncated_zstd_stream_is_refused(v1: Bundle) -> None:
    data = zst(tar_bytes(v1))
    for cut in (len(data) - 4, len(data) // 2):  # the checksum only; half the frame
        refused(data[:cut], "compressed_truncated", "(stream)")
    refused(data + b"\0", "compressed_invalid", "(stream)")  # bytes after the frame


@pytest.mark.parametrize(("inner", "kind"), [(bundle_zstd.compress, "zstd"),
                                             (gzip.compress, "gzip")])
def test_compression_inside_the_zstd_layer_is_refused(v1: Bundle, inner: Any, kind: str) -> None:
    e = refused(zst(inner(tar_bytes(v1))), "compressed", "(stream)")
    assert f"a {kind} stream; inside zstd" in str(e)


def test_a_zstd_bomb_is_refused_at_the_ratio_cap_with_bounded_memory() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (200 * MIB))  # ~6 KB
    tracemalloc.start()
    try:
        e = refused(bomb, "compressed_too_large", "(stream)", max_bytes=1 << 40)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"bound of {len(bomb) * bundle_zstd.MAX_RATIO} bytes" in str(e)
    assert peak < 16 * MIB, f"{peak / MIB:.1f} MiB allocated reading a {len(bomb)}-byte bomb"


def test_a_signed_uncompressed_length_over_the_ratio_or_the_cap_is_refused() -> None:
    from edge_agent.update.errors import BundleRejectedError
    from edge_agent.update.policy import check_uncompressed

    check_uncompressed(64_000, path="p", length=1000, max_bytes=MIB)  # within both
    for ulen, cap, code in ((64_001, MIB, "bundle_compressed_ratio"),
                            (64_000, 63_999, "bundle_compressed_too_large")):
        with pytest.raises(BundleRejectedError) as ei:
            check_uncompressed(ulen, path="p", length=1000, max_bytes=cap)
        assert ei.value.code == code, str(ei.value)


def test_signed_zstd_bomb_is_rejected_with_bounded_memory_and_nothing_moves(
        agent_proc: AgentProcess, fleet: Fleet) -> None:
    """A 6 KB signed frame of 200 MiB of zeros whose signed tar length is a lie (300 KB)."""
    agent_proc.start()
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (200 * MIB))
    last, rise = release_rejected(agent_proc, fleet, bomb, "bundle_compressed_too_large",
                                  uncompressed_length=300_000)
    assert "decompresses past its bound of 300000 bytes" in last["reason"], last
    print(f"zstd bomb: {len(bomb)} bytes signed, agent peak RSS rise {rise:.1f} MiB")
    assert rise <= 50, f"agent peak RSS rose {rise:.1f} MiB on a {len(bomb)}-byte bomb"


@pytest.mark.parametrize("kind", ["truncated", "over_ratio"])
def test_signed_bad_zstd_stream_is_rejected_with_its_code(
        kind: str, v1: Bundle, agent_proc: AgentProcess, fleet: Fleet) -> None:
    agent_proc.start()
    tar = tar_bytes(v1)
    data = zst(tar)
    if kind == "truncated":
        release_rejected(agent_proc, fleet, data[:-4], "bundle_compressed_truncated",
                         uncompressed_length=len(tar))
    else:  # signed as expanding past 64x: refused from the metadata, before downloading
        release_rejected(agent_proc, fleet, data, "bundle_compressed_ratio",
                         uncompressed_length=len(data) * bundle_zstd.MAX_RATIO + 1)


def test_a_tar_zst_bundle_goes_through_the_signed_update_flow_and_commits(
        bundles: Bundles, agent_proc: AgentProcess, fleet: Fleet, tmp_path: Path) -> None:
    """edge-fleet publish of a .tar.zst: chunks and TUF hash/length are of the compressed
    file, staged compressed; the agent decompresses it bounded, checks it and commits v3."""
    from edge_agent.bundle import write_bundle

    agent_proc.start()
    v3 = read_bundle(bundles.v3)
    out = write_bundle(v3, tmp_path / "digits-3.tar.zst")
    tar = tar_bytes(v3)
    res = fleet.publish(out)
    assert res.target.endswith("digits-3.tar.zst") and res.length == out.stat().st_size
    assert res.uncompressed_length == len(tar) and res.length < len(tar)
    assert res.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    st = wait_for(lambda: (s := agent_proc.update_status())["phase"] == "idle"
                  and s.get("last") and s, 90, "the .tar.zst release to be decided")
    assert st["last"]["result"] == "committed", st["last"]
    assert agent_proc.serving() == 3
    assert len(agent_proc.predict(X)["predictions"]) == 1
