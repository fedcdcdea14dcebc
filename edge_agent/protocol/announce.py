"""The update announcement: an *untrusted* pointer to signed TUF metadata (pure data).

Retained on ``edge/<device>/update/announce`` or ``edge/group/<g>/update/announce``
(:mod:`edge_agent.mqtt.topics`)::

    {"type": "edge.update.announce", "schema": 1, "target": "digits/2.tar",
     "files": {"metadata/1.root.json": "<base64>", …}, "chunks": true,
     "mirrors": ["https://…"], "published_at": 1718000000.0}

Nothing in it is believed until python-tuf has verified the metadata it carries
(docs/security.md). :func:`parse_announcement` raises
:class:`~edge_agent.update.errors.BadAnnouncementError` saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field

from edge_agent.update.errors import BadAnnouncementError

ANNOUNCE_TYPE = "edge.update.announce"
SCHEMA = 1  # of the announcement document (independent of the device envelope's)
FILE_KEY_RE = re.compile(r"^(metadata|targets)/[A-Za-z0-9._/-]{1,200}$")

__all__ = ["ANNOUNCE_TYPE", "FILE_KEY_RE", "SCHEMA", "Announcement", "parse_announcement"]


@dataclass(frozen=True)
class Announcement:
    """An untrusted pointer to signed metadata; see the module docstring."""

    target: str
    files: dict[str, bytes]
    chunks: bool
    mirrors: tuple[str, ...] = ()
    published_at: float = 0.0
    digest: str = field(default="", compare=False)  # sha256 of the raw payload

    def to_bytes(self) -> bytes:
        doc = {"type": ANNOUNCE_TYPE, "schema": SCHEMA, "target": self.target,
               "files": {k: base64.b64encode(v).decode("ascii")
                         for k, v in sorted(self.files.items())},
               "chunks": self.chunks, "mirrors": list(self.mirrors),
               "published_at": self.published_at}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_announcement(payload: bytes, max_bytes: int) -> Announcement:
    """Parse (not trust) an announcement. Raises BadAnnouncementError saying what is wrong."""
    if len(payload) > max_bytes:
        raise BadAnnouncementError(f"announcement is {len(payload)} bytes, cap is {max_bytes}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadAnnouncementError(f"announcement is not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("type") != ANNOUNCE_TYPE:
        raise BadAnnouncementError(f"not an update announcement (type must be {ANNOUNCE_TYPE!r})")
    if doc.get("schema") != SCHEMA:
        raise BadAnnouncementError(f"announcement schema {doc.get('schema')!r} not supported "
                                   f"(this agent reads {SCHEMA})")
    target = doc.get("target")
    if not isinstance(target, str) or not re.match(r"^[A-Za-z0-9._/-]{1,200}$", target) \
            or ".." in target.split("/"):
        raise BadAnnouncementError(f"announcement target {target!r} is not a valid target path")
    raw_files = doc.get("files", {})
    if not isinstance(raw_files, dict):
        raise BadAnnouncementError("announcement 'files' must be an object")
    files: dict[str, bytes] = {}
    for k, v in raw_files.items():
        if not isinstance(k, str) or not FILE_KEY_RE.match(k) or ".." in k.split("/"):
            raise BadAnnouncementError(f"announcement file name {k!r} is not allowed")
        if not isinstance(v, str):
            raise BadAnnouncementError(f"announcement file {k!r} must be base64 text")
        try:
            files[k] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadAnnouncementError(f"announcement file {k!r} is not base64 ({e})") from e
    mirrors = doc.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(
            isinstance(m, str) and re.match(r"^https?://", m) for m in mirrors):
        raise BadAnnouncementError("announcement 'mirrors' must be a list of http(s) URLs")
    published = doc.get("published_at", 0.0)
    return Announcement(target=target, files=files, chunks=bool(doc.get("chunks", False)),
                        mirrors=tuple(mirrors),
                        published_at=float(published) if isinstance(published, (int, float))
                        else 0.0,
                        digest=hashlib.sha256(payload).hexdigest())


