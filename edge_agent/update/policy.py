"""Pure trust decisions about one signed target on one device: no IO, no clocks.

python-tuf (``TrustedMetadataSet``) has already decided that the metadata is signed by a
threshold of trusted keys, fresh and not rolled back. What is left is whether *this*
device should take *this* target: audience, profile, version order, size, and whether
the bundle's own manifest agrees with what was signed. Every function raises an
:mod:`edge_agent.update.errors` exception whose message names what was expected and got.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from edge_agent.bundle import Manifest
from edge_agent.bundle_zstd import MAX_RATIO
from edge_agent.update.errors import (
    BundleRejectedError,
    CommandExpiredError,
    CommandReplayedError,
    CommandVersionError,
    InsufficientSpaceError,
    NotForDeviceError,
    TargetMismatchError,
    VersionNotNewerError,
)
from edge_agent.update.wire import Command, TargetSpec


@dataclass(frozen=True)
class DeviceIdentity:
    """Who this device is, for audience and profile checks."""

    device: str
    groups: tuple[str, ...]
    profile: str


def check_audience(spec: TargetSpec, me: DeviceIdentity, path: str) -> None:
    """The signed entry must name this device or one of its groups (spec: no redirection)."""
    if not spec.audience.includes(me.device, me.groups):
        raise NotForDeviceError(
            f"{path} is signed for devices {list(spec.audience.devices)} / groups "
            f"{list(spec.audience.groups)}; this is device {me.device!r} in groups "
            f"{list(me.groups)}")


def check_model_target(spec: TargetSpec, *, path: str, length: int,
                       me: DeviceIdentity, installed: int | None,
                       blocked: Collection[str], max_bytes: int) -> None:
    """Decide from signed metadata alone, before a byte of the target is fetched.

    ``blocked`` holds ``name@version`` keys of versions rolled back on this device, or
    whose isolated check hung, crashed or ran out of memory.

    Raises NotForDeviceError, VersionNotNewerError, BundleRejectedError, TargetMismatchError.
    """
    if spec.kind != "model":
        raise BundleRejectedError(f"{path} is a {spec.kind}, not a model")
    check_audience(spec, me, path)
    if me.profile not in spec.profiles:
        raise NotForDeviceError(f"{spec.name} v{spec.version} is signed for profiles "
                                f"{list(spec.profiles)}; this device is {me.profile!r}")
    if installed is not None and spec.version <= installed:
        raise VersionNotNewerError(f"{spec.name} v{spec.version} is not newer than the "
                                   f"installed v{installed} (rollback refused)")
    if f"{spec.name}@{spec.version}" in blocked:
        raise BundleRejectedError(f"{spec.name} v{spec.version} is blocked on this device "
                                  "(rolled back, or its check hung, crashed or ran out of "
                                  "memory); publish a new version")
    if length > max_bytes:
        raise TargetMismatchError(f"{path} is {length} bytes, over this device's cap of "
                                  f"{max_bytes}")
    check_uncompressed(spec.uncompressed_length, path=path, length=length,
                       max_bytes=max_bytes)


def check_uncompressed(ulen: int | None, *, path: str, length: int, max_bytes: int) -> None:
    """A compressed target's signed tar length within the ratio cap and the device's cap.

    Raises BundleRejectedError (``bundle_compressed_ratio``, ``bundle_compressed_too_large``).
    """
    if ulen is None:
        return
    if ulen > length * MAX_RATIO:
        raise BundleRejectedError(f"{path}: signed uncompressed length {ulen} is over "
                                  f"{MAX_RATIO}x its {length} compressed bytes",
                                  code="bundle_compressed_ratio")
    if ulen > max_bytes:
        raise BundleRejectedError(f"{path}: signed uncompressed length {ulen} is over this "
                                  f"device's cap of {max_bytes} (max_bundle_bytes)",
                                  code="bundle_compressed_too_large")


def check_free_space(*, free: int, length: int, reserve: int) -> None:
    """Staging copy + installed copy + a reserve must fit. Raises InsufficientSpaceError."""
    need = 2 * length + reserve
    if free < need:
        raise InsufficientSpaceError(f"needs {need} bytes free (2 x {length} + reserve "
                                     f"{reserve}), have {free}")


def check_manifest(manifest: Manifest, spec: TargetSpec, me: DeviceIdentity) -> None:
    """The verified bundle must say what its signed entry says.

    Raises BundleRejectedError (name/version disagree) or NotForDeviceError (profile).
    """
    if (manifest.name, manifest.version) != (spec.name, spec.version):
        raise BundleRejectedError(
            f"bundle manifest says {manifest.name} v{manifest.version}, its signed entry says "
            f"{spec.name} v{spec.version}")
    if me.profile not in manifest.target_profiles:
        raise NotForDeviceError(f"bundle was converted for profiles "
                                f"{list(manifest.target_profiles)}; this device is "
                                f"{me.profile!r}")


def check_command(cmd: Command, *, active: int | None, executed: Collection[str],
                  now: float) -> None:
    """A verified, signed command may run only once, before its expiry, and only on the
    version it was signed against (so a recorded command cannot roll back a later release).

    Raises CommandReplayedError, CommandExpiredError, CommandVersionError.
    """
    if cmd.id in executed:
        raise CommandReplayedError(f"command {cmd.id} was already carried out on this device")
    if now >= cmd.expires_at:
        raise CommandExpiredError(f"command {cmd.id} expired {now - cmd.expires_at:.0f} s ago "
                                  f"(expires_at {cmd.expires_at:.0f})")
    if active != cmd.from_version:
        raise CommandVersionError(
            f"command {cmd.id} rolls {cmd.name} back from v{cmd.from_version}; this device "
            f"serves {'nothing' if active is None else f'v{active}'}")
