"""``edge-fleet device-keys``: the fleet's record of each device's sealed-bundle key.

One JSON file (``--device-keys FILE``, default ``$EDGE_FLEET_DEVICE_KEYS`` or
``device-keys.json`` here), written atomically::

    {"devices": {"pi-7": {"key": "<64 hex>", "previous": "<64 hex>" | null,
                          "groups": ["line-3"]}}}

It holds public keys only (``edge-agent keygen`` prints them), so it is not secret, but its
integrity matters: a key swapped in it means releases sealed for someone else. Keep it
with the repository's offline material, under version control.

``encrypt --to`` / ``reencrypt --to`` / ``publish --encrypt-to`` take ``device:ID`` and
``group:NAME`` besides raw keys (:func:`resolve`): a group seals for the *current* key of
each member. ``rotate DEVICE NEWKEY`` records a device's new key after ``edge-agent keygen
--rotate`` on it; the old one is kept as ``previous`` for the record only (never sealed
for again: the device retires its copy when a release sealed for the new key commits).

The core (:class:`Registry`) is pure; :func:`load` / :func:`save` are the IO. Raises
:class:`DeviceKeysError` (bad input, exit 2) naming the file and what was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge_agent.crypto.sealed import recipient_key
from edge_agent.errors import BadInputError
from edge_agent.fsutil import atomic_write_text

__all__ = ["DeviceEntry", "DeviceKeysError", "Registry", "default_path", "load",
           "register", "resolve", "save"]

ENV = "EDGE_FLEET_DEVICE_KEYS"
MAX_FILE_BYTES = 16 << 20  # bytes; ~100k devices
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class DeviceKeysError(BadInputError):
    """The device-key registry is unreadable, malformed, or a name is unknown."""


@dataclass(frozen=True)
class DeviceEntry:
    key: str  # the current X25519 public key, 64 lowercase hex digits
    previous: str | None = None  # the key before the last rotation (record only)
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registry:
    devices: dict[str, DeviceEntry] = field(default_factory=dict)

    def add(self, device: str, key: str, groups: Sequence[str] = ()) -> Registry:
        _check_name(device, "device")
        for g in groups:
            _check_name(g, "group")
        if device in self.devices:
            raise DeviceKeysError(f"device {device!r} is already registered; use "
                                  "`device-keys rotate` for a new key")
        entry = DeviceEntry(_check_key(key), None, tuple(dict.fromkeys(groups)))
        return Registry({**self.devices, device: entry})

    def rotate(self, device: str, key: str) -> Registry:
        old = self.entry(device)
        new = _check_key(key)
        if new in (old.key, old.previous):
            raise DeviceKeysError(f"device {device!r}: that key is its current or previous "
                                  "key; rotation needs the new key `keygen --rotate` printed")
        return Registry({**self.devices, device: replace(old, key=new, previous=old.key)})

    def remove(self, device: str) -> Registry:
        self.entry(device)
        return Registry({d: e for d, e in self.devices.items() if d != device})

    def entry(self, device: str) -> DeviceEntry:
        try:
            return self.devices[device]
        except KeyError:
            raise DeviceKeysError(f"no device {device!r} in the device-key registry") from None

    def group(self, name: str) -> dict[str, DeviceEntry]:
        members = {d: e for d, e in self.devices.items() if name in e.groups}
        if not members:
            raise DeviceKeysError(f"group {name!r} has no device in the device-key registry")
        return members

    def to_json(self) -> str:
        return json.dumps({"devices": {d: {"key": e.key, "previous": e.previous,
                                           "groups": list(e.groups)}
                                       for d, e in sorted(self.devices.items())}},
                          indent=1) + "\n"


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise DeviceKeysError(f"{what} name {name!r}: expected 1-128 of A-Z a-z 0-9 . _ -")
    return name


def _check_key(key: str) -> str:
    k = key.strip().lower()
    if not _HEX.match(k):
        raise DeviceKeysError(f"key {key!r}: expected the 64 hex digits `edge-agent keygen` "
                              "prints")
    try:
        recipient_key(bytes.fromhex(k))
    except ValueError as e:
        raise DeviceKeysError(f"key {key!r}: {e}") from e
    return k


def parse(text: str, source: str) -> Registry:
    """A registry from its JSON. Raises DeviceKeysError naming ``source``."""
    try:
        doc = json.loads(text)
        devs = doc["devices"]
        if not isinstance(devs, dict):
            raise TypeError("devices must be an object")
        out = {}
        for d, e in devs.items():
            prev = e.get("previous")
            out[_check_name(d, "device")] = DeviceEntry(
                _check_key(e["key"]), None if prev is None else _check_key(prev),
                tuple(_check_name(g, "group") for g in e.get("groups", [])))
    except DeviceKeysError as e:
        raise DeviceKeysError(f"{source}: {e}") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DeviceKeysError(f"{source}: not a device-key registry "
                              f"({type(e).__name__}: {e})") from e
    return Registry(out)


def default_path() -> Path:
    return Path(os.environ.get(ENV) or "device-keys.json")


def load(path: Path, *, missing_ok: bool = False) -> Registry:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        if missing_ok:
            return Registry()
        raise DeviceKeysError(f"{path}: no device-key registry (`edge-fleet device-keys add` "
                              "makes it)") from None
    except OSError as e:
        raise DeviceKeysError(f"{path}: {e.strerror or e}") from e
    if len(data) > MAX_FILE_BYTES:
        raise DeviceKeysError(f"{path}: over {MAX_FILE_BYTES} bytes")
    return parse(data.decode("utf-8", "replace"), str(path))


def save(path: Path, reg: Registry) -> None:
    atomic_write_text(path, reg.to_json(), mode=0o644)


def resolve(spec: str, registry: Path | None) -> list[str] | None:
    """``device:ID`` → [its key], ``group:NAME`` → its members' keys (hex); None when
    ``spec`` is not a reference (a key or a key file)."""
    kind, _, name = spec.partition(":")
    if kind not in ("device", "group") or not name:
        return None
    reg = load(registry or default_path())
    if kind == "device":
        return [reg.entry(name).key]
    return [e.key for e in reg.group(name).values()]


# ------------------------------------------------------------------------------------ CLI


def _fp(hexkey: str) -> str:
    from edge_agent.crypto.sealed import fingerprint
    return fingerprint(bytes.fromhex(hexkey))


def _cmd(args: argparse.Namespace) -> int:
    path = args.device_keys or default_path()
    reg = load(path, missing_ok=args.action == "add")
    if args.action == "list":
        rows = reg.group(args.group) if args.group else reg.devices
        if args.json:
            print(json.dumps({d: {"key": e.key, "fingerprint": _fp(e.key),
                                  "previous": e.previous, "groups": list(e.groups)}
                              for d, e in sorted(rows.items())}, indent=1))
            return 0
        for d, e in sorted(rows.items()):
            print(f"{d:<24} {_fp(e.key)}  {','.join(e.groups) or '-':<20} "
                  f"{'rotated from ' + _fp(e.previous) if e.previous else ''}".rstrip())
        return 0
    if args.action == "add":
        reg = reg.add(args.device, args.key, args.group or [])
        msg = f"added {args.device} ({_fp(reg.entry(args.device).key)})"
    elif args.action == "rotate":
        reg = reg.rotate(args.device, args.key)
        e = reg.entry(args.device)
        msg = (f"rotated {args.device}: {_fp(e.previous or '')} → {_fp(e.key)}; seal the "
               f"next release for it (`--to device:{args.device}` or a group it is in): the "
               "device retires its old key when that release commits")
    else:
        reg = reg.remove(args.device)
        msg = f"removed {args.device}; releases sealed before still open on it"
    save(path, reg)
    print(f"{msg} ({path})")
    return 0


def add_registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-keys", type=Path, metavar="FILE",
                   help=f"the device-key registry for device:ID / group:NAME (default "
                        f"${ENV} or ./device-keys.json)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("device-keys", help="the devices' public keys for sealed bundles: "
                                           "add, rotate, remove, list",
                       description=(__doc__ or "").split("\n\n")[0])
    acts = p.add_subparsers(dest="action", required=True)
    a = acts.add_parser("add", help="register a device's key (the hex `edge-agent keygen` "
                                    "prints)")
    a.add_argument("device")
    a.add_argument("key")
    a.add_argument("--group", action="append", metavar="G", help="a group it belongs to "
                                                                "(repeatable)")
    r = acts.add_parser("rotate", help="record the new key after `edge-agent keygen --rotate`")
    r.add_argument("device")
    r.add_argument("key")
    rm = acts.add_parser("remove", help="forget a device (future group seals leave it out)")
    rm.add_argument("device")
    ls = acts.add_parser("list", help="devices, fingerprints, groups")
    ls.add_argument("--group", metavar="G")
    ls.add_argument("--json", action="store_true")
    for c in (a, r, rm, ls):
        add_registry_arg(c)
        c.set_defaults(func=_cmd)

