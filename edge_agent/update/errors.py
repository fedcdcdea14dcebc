"""Why an update was refused, split by who is at fault.

::

    UpdateError (edge_agent.errors)          refused: bad, malicious, or failed on this device
    ├── UntrustedMetadataError   untrusted    signatures below threshold, unknown key, unsigned
    ├── MetadataRollbackError    rollback     metadata version older than the trusted one (replay)
    ├── ExpiredMetadataError     expired      a top-level role has expired (freeze attack)
    ├── TargetMismatchError      mismatch     length or sha256 differs from the signed metadata,
    │                                         more bytes than signed (endless data), bad chunk
    ├── BadAnnouncementError     announcement malformed announcement or missing signed files
    ├── NotForDeviceError        audience     signed for other devices/groups, or another profile
    ├── VersionNotNewerError     version      model version not higher than the one installed
    ├── BundleRejectedError      bundle       bundle malformed or disagrees with its signed entry
    │                            manifest_invalid  manifest.json breaks a rule (ManifestError)
    │                            bundle_<rule>     the tar breaks a layout rule (BundleMemberError):
    │                                              sparse, duplicate, unexpected, not_regular,
    │                                              too_large, truncated, compressed
    ├── ModelRejectedError       load/golden  the device's runtime refused the model
    ├── ProbationFailedError     probation    errors/latency/crashes after the swap → rolled back
    ├── CommandRejectedError     command      a signed command that cannot be carried out
    │   ├── CommandReplayedError  command_replayed  its id was already carried out here
    │   ├── CommandExpiredError   command_expired   past its signed expiry
    │   └── CommandVersionError   command_version   the device does not serve its from-version
    └── InternalUpdateError      internal     a bug in the update path; attempt given up
    UpdateTransportError (edge_agent.errors.TransportError)
    │                            transport    download stalled or failed: retried, not blamed
    ├── InsufficientSpaceError   disk         not enough free disk for staging + install:
    │                                         the device's condition, retried like transport
    └── DownloadDeadlineError    deadline     the update's downloads outlived their deadline
                                              (a dripping source): abandoned, retried later
    OSError from the device's disk (not wrapped; :func:`error_code` names it, retried):
                                 disk_full    ENOSPC / EDQUOT    read_only  EROFS
                                 io_error     EIO

Each class carries a short machine ``code`` that events and status report next to the
one-line message. The codes of failures the device retries by itself (transport and
disk trouble: ``update.failed``) are listed once, in
:data:`edge_agent.protocol.kinds.RETRIED_CODES`. :func:`from_tuf` maps python-tuf's
``RepositoryError`` tree onto this one so callers never see a tuf exception;
:func:`from_bundle` gives a refused bundle its code.
"""

from __future__ import annotations

import errno

from edge_agent.errors import (
    BundleError,
    BundleMemberError,
    EdgeError,
    ManifestError,
    TransportError,
    UpdateError,
)

__all__ = [
    "BadAnnouncementError",
    "BundleRejectedError",
    "CommandExpiredError",
    "CommandRejectedError",
    "CommandReplayedError",
    "CommandVersionError",
    "DownloadDeadlineError",
    "ExpiredMetadataError",
    "InsufficientSpaceError",
    "InternalUpdateError",
    "MetadataRollbackError",
    "ModelRejectedError",
    "NotForDeviceError",
    "ProbationFailedError",
    "TargetMismatchError",
    "UntrustedMetadataError",
    "UpdateError",
    "UpdateTransportError",
    "VersionNotNewerError",
    "disk_code",
    "error_code",
    "from_bundle",
    "from_tuf",
]


class _Coded(UpdateError):
    code = "rejected"


class UntrustedMetadataError(_Coded):
    """Metadata not signed by a threshold of the keys the trusted root names for its role."""

    code = "untrusted"


class MetadataRollbackError(_Coded):
    """Metadata older than (or inconsistent with) what this device already trusts."""

    code = "rollback"


class ExpiredMetadataError(_Coded):
    """Metadata past its expiry: someone is replaying a frozen view of the repository."""

    code = "expired"


class TargetMismatchError(_Coded):
    """Downloaded bytes differ from the signed length/sha256 (or a chunk from its hash)."""

    code = "mismatch"


class BadAnnouncementError(_Coded):
    """The announcement is malformed or lacks a file the signed metadata requires."""

    code = "announcement"


class NotForDeviceError(_Coded):
    """Signed for other devices or groups, or for another device profile."""

    code = "audience"


class VersionNotNewerError(_Coded):
    """The model version is not higher than the installed one (rollback attack)."""

    code = "version"


class BundleRejectedError(_Coded):
    """The bundle is malformed or its manifest disagrees with its signed target entry."""

    code = "bundle"

    def __init__(self, message: str, *, code: str = "bundle") -> None:
        super().__init__(message)
        self.code = code


class ModelRejectedError(_Coded):
    """The device's runtime would not load the model, or golden vectors did not match."""

    code = "model"

    def __init__(self, message: str, *, code: str = "model") -> None:
        super().__init__(message)
        self.code = code
        self.blocking = False  # set by a check whose every verdict blocks (update.check)


class ProbationFailedError(_Coded):
    """The new model misbehaved while serving; the previous version was restored."""

    code = "probation"


class CommandRejectedError(_Coded):
    """A signed command that cannot be carried out on this device."""

    code = "command"


class CommandReplayedError(CommandRejectedError):
    """The command's id was already carried out on this device (replay)."""

    code = "command_replayed"


class CommandExpiredError(CommandRejectedError):
    """The command is past its signed expiry (a recorded command replayed later)."""

    code = "command_expired"


class CommandVersionError(CommandRejectedError):
    """The device does not serve the version the command was signed to roll back from."""

    code = "command_version"




class InternalUpdateError(_Coded):
    """A bug in the update path: the attempt is given up so the agent keeps serving."""

    code = "internal"


class UpdateTransportError(TransportError):
    """The download failed or stalled; not the data's fault, so it is retried later."""

    code = "transport"


class InsufficientSpaceError(UpdateTransportError):
    """Not enough free disk for the staged download plus the installed copy.

    The device's condition, not the release's: retried (after ``retry_backoff_s``) like a
    transport failure, so the update goes ahead once space is freed.
    """

    code = "disk"


# errno of a failed disk write or read → the code of the (retried) update.failed event
DISK_CODES: dict[int, str] = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full",
                              errno.EROFS: "read_only", errno.EIO: "io_error"}
SPACE_CODES = frozenset({"disk", "disk_full"})  # lack of space: staged bytes are freed


def disk_code(e: BaseException) -> str | None:
    """``disk_full`` / ``read_only`` / ``io_error`` for an OSError of the device's disk."""
    return DISK_CODES.get(e.errno or 0) if isinstance(e, OSError) else None


class DownloadDeadlineError(UpdateTransportError):
    """The update's downloads (metadata and target, every source) were not done within
    ``update.download_timeout_s`` (or a metadata file within ``metadata_timeout_s``): the
    source is abandoned mid-read, the attempt fails, and it is retried after a backoff."""

    code = "deadline"

    def abandoning(self, what: str) -> DownloadDeadlineError:
        """The same failure, saying what was abandoned (source, progress)."""
        return DownloadDeadlineError(f"{self}; abandoned {what}")


def error_code(e: BaseException) -> str:
    """The short code reported in events (``"rejected"`` for an unknown UpdateError).

    A plain OSError is the disk's (:func:`disk_code`) or else counted as transport.
    """
    if isinstance(e, OSError) and not isinstance(e, EdgeError):
        return disk_code(e) or "transport"
    return str(getattr(e, "code", "transport" if isinstance(e, TransportError) else "rejected"))


def from_bundle(e: BundleError) -> BundleRejectedError:
    """A bundle the reader refused, with its code: ``manifest_invalid`` for the manifest,
    ``bundle_<rule>`` for a tar rule, else ``bundle`` (the message is kept)."""
    if isinstance(e, ManifestError):
        return BundleRejectedError(str(e), code="manifest_invalid")
    if isinstance(e, BundleMemberError):
        return BundleRejectedError(str(e), code=f"bundle_{e.rule}")
    sealed_code = getattr(e, "code", None)  # edge_agent.crypto.SealedBundleError's codes
    if isinstance(sealed_code, str):
        return BundleRejectedError(str(e), code=sealed_code)
    return BundleRejectedError(str(e))


def from_tuf(e: Exception) -> UpdateError | UpdateTransportError:
    """Translate a python-tuf exception into this tree (the message is kept)."""
    from tuf.api import exceptions as tuf_exc  # lazy: tuf only when updates run

    msg = str(e) or type(e).__name__
    if isinstance(e, tuf_exc.UnsignedMetadataError):
        return UntrustedMetadataError(f"untrusted metadata: {msg}")
    if isinstance(e, tuf_exc.BadVersionNumberError):
        return MetadataRollbackError(f"metadata version rejected: {msg}")
    if isinstance(e, tuf_exc.ExpiredMetadataError):
        return ExpiredMetadataError(f"expired metadata: {msg}")
    if isinstance(e, tuf_exc.LengthOrHashMismatchError):
        return TargetMismatchError(f"length or hash mismatch: {msg}")
    if isinstance(e, tuf_exc.DownloadLengthMismatchError):
        return TargetMismatchError(f"more data than signed: {msg}")
    if isinstance(e, tuf_exc.DownloadHTTPError) and e.status_code == 404:
        return BadAnnouncementError(f"a signed file is not available: {msg}")
    if isinstance(e, tuf_exc.DownloadError):
        return UpdateTransportError(f"download failed: {msg}")
    if isinstance(e, tuf_exc.RepositoryError):
        return UntrustedMetadataError(f"metadata rejected: {msg}")
    return UpdateTransportError(f"{type(e).__name__}: {msg}")
