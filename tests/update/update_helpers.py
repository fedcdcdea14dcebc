"""Shared pieces of the update tests: constants, the workstation, the device handle.

Kept out of conftest.py so test modules import them by a unique name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from securesystemslib.signer import CryptoSigner, SSlibKey
from waiting import wait_for

from edge_agent.bundle import Bundle, EncodedArray, read_bundle, sha256_bytes, write_bundle
from edge_agent.errors import ModelLoadError
from edge_agent.hooks import AgentEvent
from edge_agent.manifest import GoldenVector, Manifest
from edge_agent.runtime.signature import tflite_specs
from edge_agent.update.service import UpdateService
from edge_agent.update.state import Outcome
from edge_agent.update.wire import Audience
from fleet.publish import Broker, Published, publish
from fleet.repo import FleetRepo

DEVICE = "dev1"
GROUP = "line-3"
KEY_NAMES = ("root-a", "root-b", "targets-a", "targets-b", "targets-c", "snapshot",
             "timestamp", "timestamp-2", "rogue")
ONLINE = ("targets-a", "targets-b", "snapshot", "timestamp")
ME = Audience((DEVICE,), ())
CHUNK = 16 * 1024  # small chunks so a ~90 KB bundle has several


@dataclass(frozen=True)
class KeyPair:
    public: SSlibKey
    signer: CryptoSigner
    path: Path


@dataclass
class Fleet:
    """The workstation: a repository (root 2-of-2, targets 2-of-2) and its keys."""

    repo: FleetRepo
    keys: dict[str, KeyPair]
    broker_url: str

    def signers(self, *names: str) -> list[CryptoSigner]:
        return [self.keys[n].signer for n in (names or ONLINE)]

    def publish(self, bundle: Path, *, signers: list[str] | None = None,
                audience: Audience = ME, **kw: Any) -> Published:
        kw.setdefault("chunk_size", CHUNK)
        return publish(self.repo, bundle, self.signers(*(signers or ONLINE)),
                       audience=audience, broker=self.broker_url, **kw)

    def broker(self) -> Broker:
        return Broker(self.broker_url)


# --- bundles derived from the real digits bundles (no TensorFlow needed) ---------------------


def derive(src: Path, out: Path, *, version: int, profiles: tuple[str, ...] | None = None,
           golden_bad: bool = False, model_bytes: bytes | None = None) -> Path:
    b = read_bundle(src)
    m = b.manifest
    changes: dict[str, Any] = {"version": version}
    if profiles is not None:
        changes["target_profiles"] = profiles
    if golden_bad:
        def shift(g: Any) -> Any:
            out_arr = g.output.decode()
            bad = (out_arr.astype(np.int16) + 60).clip(-128, 127).astype(out_arr.dtype)
            return g.with_output(EncodedArray.encode(bad), atol=0.0)
        changes["golden"] = tuple(shift(g) for g in m.golden)
    data = b.model_bytes
    if model_bytes is not None:
        data = model_bytes
        changes.update(model_sha256=sha256_bytes(data), model_size=len(data),
                       **_renamed(m, changes.get("golden", m.golden), data))
    write_bundle(Bundle(replace(m, **changes), data, b.report, str(out)), out)
    return out


def _renamed(m: Manifest, golden: tuple[GoldenVector, ...], data: bytes) -> dict[str, Any]:
    """The manifest's tensors and golden vectors under ``data``'s own tensor names (same
    shapes, by position): the runtime binds golden vectors by name. Bytes that do not load
    (forged broken models) keep the manifest as it is."""
    try:
        ins, outs = tflite_specs(data)
    except ModelLoadError:
        return {}
    rin = {a.name: b.name for a, b in zip(m.inputs, ins, strict=True)}
    rout = {a.name: b.name for a, b in zip(m.outputs, outs, strict=True)}
    return {"inputs": tuple(replace(s, name=rin[s.name]) for s in m.inputs),
            "outputs": tuple(replace(s, name=rout[s.name]) for s in m.outputs),
            "golden": tuple(GoldenVector({rin[k]: v for k, v in g.inputs.items()},
                                         {rout[k]: v for k, v in g.outputs.items()},
                                         {rout[k]: v for k, v in g.atols.items()})
                            for g in golden)}


@dataclass(frozen=True)
class Bundles:
    v1: Path
    v2: Path
    v3: Path
    v4: Path
    v3_rpi4: Path
    v3_golden_bad: Path
    v3_broken: Path


@dataclass(frozen=True)
class PinnedDigits:
    bundle: Path
    bundle_v2: Path
    eval_npz: Path


class Device:
    """An in-process :class:`edge_agent.app.Agent` with the update component."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.events: list[AgentEvent] = []
        agent.hooks.on_event(self.events.append)
        svc = [c for c in agent.components if isinstance(c, UpdateService)]
        assert svc, f"update component not started: {agent.components}"
        self.svc: UpdateService = svc[0]

    def mark(self) -> int:
        return len(self.svc.outcomes)

    def outcome(self, after: int, timeout_s: float = 30.0) -> Outcome:
        wait_for(lambda: len(self.svc.outcomes) > after and self.svc.idle(), timeout_s,
                 "an update outcome")
        return self.svc.outcomes[after]

    def serving(self, name: str = "digits") -> int | None:
        return self.agent.registry.active_version(name)

    def predict_version(self, x: np.ndarray) -> int:
        return int(self.agent.registry.get("digits").predict(x, source="test").version)

    def on_disk(self, name: str = "digits") -> int | None:
        """What the store would serve after a restart (``active.json``, else the highest)."""
        return self.agent.store.serving_version(name)

    def trusted(self) -> dict[str, int]:
        assert self.svc.flow is not None
        return self.svc.flow.trust.versions()

    def trusted_files(self) -> dict[str, bytes]:
        """The bytes of every trusted metadata file in ``<update dir>/metadata``.

        The provisioned root (the trust anchor ngclient caches as ``root_history/1``) is
        left out: caching it is not trusting anything new.
        """
        assert self.svc.flow is not None
        trust = self.svc.flow.trust
        anchor = trust.bootstrap()
        if not trust.dir.is_dir():
            return {}
        files = {str(p.relative_to(trust.dir)): p.read_bytes()
                 for p in sorted(trust.dir.rglob("*")) if p.is_file()}
        return {k: v for k, v in files.items() if v != anchor}

    def installed(self, name: str = "digits") -> tuple[str, ...]:
        """Every entry of the store's ``<name>/`` directory but ``active.json``: the
        version directories, and anything half-written beside them."""
        d = self.agent.store.models_dir / name
        if not d.is_dir():
            return ()
        return tuple(sorted(p.name for p in d.iterdir() if p.name != "active.json"))

    def snapshot(self) -> DeviceSnapshot:
        """What an attack must not move (see :func:`assert_nothing_moved`)."""
        return DeviceSnapshot(self.mark(), self.installed(), self.serving(), self.on_disk(),
                              self.trusted(), self.trusted_files())

    def events_of(self, kind: str) -> list[AgentEvent]:
        return [e for e in self.events if e.kind == kind]


DeviceFactory = Callable[..., Device]


@dataclass(frozen=True)
class DeviceSnapshot:
    """The device's update-relevant state at one instant."""

    outcomes: int  # len(svc.outcomes): the index of the next outcome
    installed: tuple[str, ...]
    serving: int | None  # in memory (registry)
    on_disk: int | None  # what a restart would serve (active.json)
    trusted: dict[str, int]  # highest trusted version per TUF role
    trusted_files: dict[str, bytes]  # exact bytes of the trusted metadata


TRUSTED_FILE = {"timestamp": "timestamp.json", "snapshot": "snapshot.json",
                "targets": "targets.json"}


def role_files(files: dict[str, bytes], *roles: str) -> dict[str, bytes]:
    """The bytes of ``roles`` (timestamp/snapshot/targets) in announcement ``files``."""
    out: dict[str, bytes] = {}
    for role in roles:
        names = [k for k in files if k.endswith(f"/{role}.json") or k.endswith(f".{role}.json")]
        assert len(names) == 1, (role, sorted(files))
        out[role] = files[names[0]]
    return out


def signed_release(repo: FleetRepo) -> dict[str, bytes]:
    """What the legitimate repository signed last: timestamp, snapshot and targets bytes."""
    return role_files(repo.announce_files(), "timestamp", "snapshot", "targets")


def assert_nothing_moved(dev: Device, before: DeviceSnapshot, *,
                         accepted: dict[str, bytes] | None = None) -> None:
    """No version was installed, the serving version did not move (in memory or on disk),
    and the trusted metadata is byte for byte what it was, except the roles in
    ``accepted``, which must now be exactly those (validly signed) bytes and no others.
    """
    assert dev.installed() == before.installed, "a version was installed or left behind"
    assert (dev.serving(), dev.on_disk()) == (before.serving, before.on_disk)
    want = dict(before.trusted_files)
    for role, data in (accepted or {}).items():
        want[TRUSTED_FILE[role]] = data
    got = dev.trusted_files()
    assert sorted(got) == sorted(want), "trusted metadata files appeared or vanished"
    moved = [k for k in want if got[k] != want[k]]
    assert not moved, f"trusted metadata moved: {moved} (trusted now {dev.trusted()})"
    if not accepted:
        assert dev.trusted() == before.trusted
