"""The model bundle: ``model.tflite`` + ``manifest.json`` + ``report.json``.

A bundle is a directory or an uncompressed ``.tar`` of the same three files (see
``docs/bundle.md``). This module is file IO around pure checks and never imports a
runtime; the manifest's dataclasses and its strict parser are :mod:`edge_agent.manifest`
(re-exported here).

Reading is bounded **in total**: every reader takes ``max_bytes`` — for an update the
signed length of the target, for a bundle on disk ``[agent] max_bundle_bytes`` — and the
members read may not sum past it, nor past a per-member cap (``manifest.json`` 16 MiB,
``report.json`` 4 MiB). A tar is read from its file header by header
(:func:`check_member`, pure) and member by member in 1 MiB chunks, and is refused at the
first header that breaks a rule, before that member's data is read: so a header that
lies (a GNU sparse member claiming GiBs of holes, a size past the end of the file)
cannot make the reader allocate. Rules: only ``model.tflite``, ``manifest.json`` and
``report.json`` (``./`` prefix allowed), each at most once once ``./x`` and ``x`` are
taken as one name, each a regular, non-sparse file within its cap and the remaining
total; the stream plain, or one zstd frame around the plain tar (``.tar.zst``,
:mod:`edge_agent.bundle_zstd`, decompressed in bounded steps and refused at the first
byte past its bound): a gzip/bzip2/xz stream, or any compression inside the zstd frame,
is refused by its magic number, so nothing can expand past the bound.

Raises :class:`~edge_agent.errors.BundleError` for anything malformed:
:class:`~edge_agent.errors.BundleMemberError` (``member``, ``rule``) for a tar rule,
:class:`~edge_agent.errors.ManifestError` (``field``) for the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast

from edge_agent import bundle_zstd
from edge_agent.errors import BundleError, BundleMemberError, InvalidRequestError, ManifestError
from edge_agent.fsutil import atomic_write_bytes, staged_dir
from edge_agent.manifest import (
    DTYPES,
    MAX_VARIANTS,
    MODEL_FILE,
    NAME_RE,
    SCHEMA_VERSION,
    VARIANTS_DIR,
    DriftReference,
    EncodedArray,
    GoldenVector,
    InputStats,
    Manifest,
    Preprocessing,
    TensorSpec,
    Variant,
    parse_manifest,
)
from edge_agent.untrusted_json import loads as untrusted_loads

__all__ = [
    "BUNDLE_FILES", "DTYPES", "MANIFEST_FILE", "MAX_BUNDLE_BYTES", "MODEL_FILE", "REPORT_FILE",
    "SCHEMA_VERSION", "Bundle", "DriftReference", "EncodedArray", "GoldenVector", "InputStats",
    "Manifest", "Preprocessing", "TensorSpec", "bundle_from_files", "check_member",
    "is_tar_path", "read_bundle", "read_tar_bytes", "read_tar_file", "sha256_bytes",
    "tar_bytes", "variant_member", "write_bundle",
]

MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
BUNDLE_FILES = (MODEL_FILE, MANIFEST_FILE, REPORT_FILE)
MAX_BUNDLE_BYTES = 512 << 20  # bytes; default bound on everything read from one bundle
MEMBER_CAPS = {MANIFEST_FILE: 16 << 20, REPORT_FILE: 4 << 20}  # bytes; the model: the total
READ_CHUNK = 1 << 20  # bytes read from a member at a time
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
              b"\x28\xb5\x2f\xfd": "zstd"}  # magic numbers of streams we refuse

# what tarfile raises for malformed headers: its own errors, and IndexError/ValueError from
# its number parsing (a GNU sparse extension block cut short reaches nti() with b"")
TAR_FAULTS = (tarfile.TarError, EOFError, IndexError, ValueError, OverflowError)

# BundleMemberError.rule values (update events report them as code "bundle_<rule>")
UNEXPECTED, DUPLICATE, SPARSE, NOT_REGULAR, TOO_LARGE, TRUNCATED, COMPRESSED_RULE = (
    "unexpected", "duplicate", "sparse", "not_regular", "too_large", "truncated", "compressed")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle opened from disk: its manifest, model bytes and report."""

    manifest: Manifest
    model_bytes: bytes
    report: dict[str, Any]
    source: str
    sealed: bytes | None = field(default=None, repr=False, compare=False)  # the envelope
    # it was decrypted from (edge_agent.crypto): what the store keeps at rest
    # variant name → its model's bytes (manifest.variants; empty for a single-model bundle)
    variant_bytes: dict[str, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def model_files(self) -> dict[str, bytes]:
        """Every model of the bundle by member name: ``model.tflite``, then each variant's
        ``variants/NAME.tflite`` in the manifest's order (what is hashed, loaded, encrypted)."""
        return {MODEL_FILE: self.model_bytes,
                **{v.file: self.variant_bytes[v.name] for v in self.manifest.variants}}

    def files(self) -> dict[str, bytes]:
        """Every member, in tar order (the variants last, so a single-model bundle's
        bytes are those it always had)."""
        models = self.model_files()
        return {
            MODEL_FILE: models.pop(MODEL_FILE),
            MANIFEST_FILE: self.manifest.to_json().encode(),
            REPORT_FILE: (json.dumps(self.report, indent=1, sort_keys=True) + "\n").encode(),
            **models,
        }


def _parse_files(files: dict[str, bytes], source: str, verify_hash: bool) -> Bundle:
    for f in (MODEL_FILE, MANIFEST_FILE):
        if f not in files:
            raise BundleError(f"{source}: missing {f}")
    try:
        mdict = untrusted_loads(files[MANIFEST_FILE], MANIFEST_FILE)
    except InvalidRequestError as e:
        raise ManifestError(f"{source}: {e}", field="manifest") from e
    manifest = parse_manifest(mdict, source)
    model = files[MODEL_FILE]
    if verify_hash:
        _check_model(model, MODEL_FILE, manifest.model_size, manifest.model_sha256, source)
    variants = _variant_models(files, manifest, source, verify_hash)
    report: Any = {}
    if REPORT_FILE in files:
        try:
            report = untrusted_loads(files[REPORT_FILE], REPORT_FILE)
        except InvalidRequestError as e:
            raise BundleError(f"{source}: {e}") from e
        if not isinstance(report, dict):
            raise BundleError(f"{source}: report.json must hold a JSON object")
    return Bundle(manifest, model, report, source, variant_bytes=variants)


def _check_model(data: bytes, member: str, size: int, sha256: str, source: str) -> None:
    if len(data) != size:
        raise BundleError(f"{source}: {member} is {len(data)} bytes, manifest says {size}")
    got = sha256_bytes(data)
    if got != sha256:
        raise BundleError(f"{source}: {member} sha256 {got[:16]}… does not match "
                          f"manifest {sha256[:16]}…")


def _variant_models(files: dict[str, bytes], manifest: Manifest, source: str,
                    verify_hash: bool) -> dict[str, bytes]:
    """Each listed variant's model, checked like model.tflite; a listed member missing is a
    manifest error, a variant member the manifest does not list is refused."""
    listed: dict[str, Variant] = {v.file: v for v in manifest.variants}
    for member in files:
        if member.startswith(VARIANTS_DIR + "/") and member not in listed:
            raise _refuse(source, member, UNEXPECTED, "a variant the manifest does not list")
    out: dict[str, bytes] = {}
    for member, v in listed.items():
        if member not in files:
            raise ManifestError(f"{source}: manifest.variants lists {v.name!r} but the "
                                f"bundle has no {member}", field="variants")
        if verify_hash:
            _check_model(files[member], member, v.size_bytes, v.sha256, source)
        out[v.name] = files[member]
    return out


def variant_member(name: str) -> str | None:
    """The variant a member name holds (``variants/NAME.tflite``), else None."""
    head, _, file = name.partition("/")
    stem, dot, ext = file.rpartition(".")
    if head == VARIANTS_DIR and dot and ext == "tflite" and NAME_RE.fullmatch(stem):
        return stem
    return None


def bundle_from_files(files: dict[str, bytes], source: str, *,
                      sealed: bytes | None = None) -> Bundle:
    """A bundle from its files held in memory (decrypted by :mod:`edge_agent.crypto`),
    hash-verified; ``sealed`` is the envelope they came from. Raises BundleError."""
    b = _parse_files(files, source, True)
    return replace(b, sealed=sealed) if sealed is not None else b


def _refuse(source: str, member: str, rule: str, problem: str) -> BundleMemberError:
    return BundleMemberError(f"{source}: member {member!r}: {problem}", member=member, rule=rule)


def _cap(name: str, max_bytes: int, used: int) -> int:
    return min(MEMBER_CAPS.get(name, max_bytes), max_bytes - used)


def check_member(m: tarfile.TarInfo, seen: Collection[str], *, used: int, max_bytes: int,
                 source: str) -> str:
    """The bundle file ``m`` holds, if it may be read: a known name (``x`` or ``./x``) not
    in ``seen``, a regular non-sparse file, within its cap and ``max_bytes - used``.

    Pure (the header only). Raises BundleMemberError naming the member and the rule.
    """
    name = m.name[2:] if m.name.startswith("./") else m.name
    if name not in BUNDLE_FILES and variant_member(name) is None:
        raise _refuse(source, m.name, UNEXPECTED,
                      f"not a bundle file (a bundle tar holds only {', '.join(BUNDLE_FILES)}"
                      f" and {VARIANTS_DIR}/NAME.tflite)")
    if name not in BUNDLE_FILES and len(set(seen) - set(BUNDLE_FILES)) >= MAX_VARIANTS:
        raise _refuse(source, m.name, UNEXPECTED, f"more than {MAX_VARIANTS} variants")
    if name in seen:
        raise _refuse(source, m.name, DUPLICATE,
                      f"a second {name} (names are compared without a leading './')")
    if m.issparse():
        raise _refuse(source, m.name, SPARSE, f"a sparse file claiming {m.size} bytes of "
                      "holes; bundle members are regular files stored whole")
    if not m.isreg():
        raise _refuse(source, m.name, NOT_REGULAR,
                      f"not a regular file (tar type {m.type!r}); links, directories and "
                      "devices are refused")
    cap = _cap(name, max_bytes, used)
    if m.size > cap:
        raise _refuse(source, m.name, TOO_LARGE,
                      f"{m.size} bytes, over the {cap} bytes left of this bundle's bound "
                      f"(max {MEMBER_CAPS.get(name, max_bytes)} for {name}, {max_bytes} "
                      "in total)")
    return name


def _read_member(tf: tarfile.TarFile, m: tarfile.TarInfo, source: str) -> bytes:
    """The member's data, read in chunks (a header's size never allocates by itself)."""
    f = tf.extractfile(m)
    assert f is not None  # a regular file (check_member)
    buf = io.BytesIO()
    left = m.size
    while left:
        try:
            chunk = f.read(min(left, READ_CHUNK))
        except tarfile.ReadError:  # "unexpected end of data"
            chunk = b""
        if not chunk:
            raise _refuse(source, m.name, TRUNCATED,
                          f"ends after {m.size - left} of its {m.size} bytes")
        buf.write(chunk)
        left -= len(chunk)
    return buf.getvalue()  # no copy: BytesIO hands over its buffer


def _refuse_compressed(magic: bytes, source: str, what: str) -> None:
    for prefix, kind in COMPRESSED.items():
        if magic.startswith(prefix):
            raise _refuse(source, "(stream)", COMPRESSED_RULE, f"a {kind} stream; {what}")


def _read_tar(stream: IO[bytes], source: str, size: int, max_bytes: int) -> dict[str, bytes]:
    """Members of the ``size``-byte tar in ``stream``, or of the one zstd frame around it
    (:mod:`edge_agent.bundle_zstd`: ``max_bytes`` then bounds the decompressed bytes,
    and so does the ratio cap)."""
    magic = stream.read(6)
    stream.seek(0)
    if bundle_zstd.is_zstd(magic):
        max_bytes = bundle_zstd.output_bound(size, max_bytes)
        z = bundle_zstd.ZstdReader(stream, max_output=max_bytes, source=source)
        _refuse_compressed(z.peek(6), source, "inside zstd (only one outer zstd layer is "
                           "allowed)")
        files = _read_members(  # tarfile's stream mode: forward reads only
            lambda: tarfile.open(fileobj=cast(IO[bytes], z), mode="r|"), source, max_bytes)  # noqa: SIM115
        z.finish()
        return files
    _refuse_compressed(magic, source, "bundle tars are plain or zstd (.tar.zst) only")
    return _read_members(lambda: tarfile.open(fileobj=stream, mode="r:"), source,
                         min(size, max_bytes))


def _read_members(open_tar: Callable[[], tarfile.TarFile], source: str,
                  max_bytes: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    used = 0
    try:
        with open_tar() as tf:
            while (m := tf.next()) is not None:
                name = check_member(m, files, used=used, max_bytes=max_bytes, source=source)
                files[name] = _read_member(tf, m, source)
                used += m.size
    except TAR_FAULTS as e:
        raise BundleError(f"{source}: not a valid bundle tar ({type(e).__name__}: {e})") from e
    return files


def read_tar_bytes(data: bytes, source: str = "<bytes>", verify_hash: bool = True, *,
                   max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Open a bundle ``.tar`` held in memory, reading at most ``max_bytes`` of members."""
    if len(data) > max_bytes:
        raise _refuse(source, "(tar)", TOO_LARGE, f"{len(data)} bytes, over {max_bytes}")
    return _parse_files(_read_tar(io.BytesIO(data), source, len(data), max_bytes),
                        source, verify_hash)


def read_tar_file(path: str | Path, source: str | None = None, verify_hash: bool = True, *,
                  max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Open a bundle ``.tar`` (or ``.tar.zst``) from its file, member by member; at most
    ``max_bytes`` are read (the update flow passes the signed length; for a ``.tar.zst``
    the signed uncompressed length, which bounds what the frame decompresses to).
    Raises BundleError, OSError."""
    p = Path(path)
    src = source or str(p)
    with p.open("rb") as f:
        size = f.seek(0, io.SEEK_END)
        if size > max_bytes:
            raise _refuse(src, "(tar)", TOO_LARGE, f"{size} bytes, over the bundle bound of "
                          f"{max_bytes} (max_bundle_bytes)")
        f.seek(0)
        return _parse_files(_read_tar(f, src, size, max_bytes), src, verify_hash)


def _read_capped(fp: Path, name: str, p: Path, max_bytes: int, used: int) -> bytes:
    cap = _cap(name, max_bytes, used)
    with fp.open("rb") as f:
        data = f.read(cap + 1)  # never more than the bound, even if the file grows
    if len(data) > cap:
        raise _refuse(str(p), name, TOO_LARGE, f"over the {cap} bytes left of the "
                      f"bundle bound (max_bundle_bytes {max_bytes})")
    return data


def _read_dir(p: Path, max_bytes: int) -> dict[str, bytes]:
    vdir = p / VARIANTS_DIR
    found = [p / n for n in BUNDLE_FILES] + (
        sorted(vdir.iterdir())[:MAX_VARIANTS + 1] if vdir.is_dir() else [])
    files: dict[str, bytes] = {}
    used = 0
    for fp in found:
        name = fp.name if fp.parent == p else f"{VARIANTS_DIR}/{fp.name}"
        if not fp.is_file() or (name not in BUNDLE_FILES and variant_member(name) is None):
            continue
        if len(files) - len(set(files) & set(BUNDLE_FILES)) >= MAX_VARIANTS:
            raise _refuse(str(p), name, UNEXPECTED, f"more than {MAX_VARIANTS} variants")
        files[name] = _read_capped(fp, name, p, max_bytes, used)
        used += len(files[name])
    return files


def read_bundle(path: str | Path, verify_hash: bool = True, *,
                max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Open a bundle directory or ``.tar``, reading at most ``max_bytes`` in total;
    verifies model size and sha256 by default. Raises BundleError."""
    p = Path(path)
    try:
        if p.is_dir():
            return _parse_files(_read_dir(p, max_bytes), str(p), verify_hash)
        if p.is_file():
            return read_tar_file(p, verify_hash=verify_hash, max_bytes=max_bytes)
    except OSError as e:
        raise BundleError(f"{p}: cannot read: {e.strerror or e}") from e
    raise BundleError(f"{p}: no such bundle (expected a directory or a .tar)")


def tar_bytes(bundle: Bundle) -> bytes:
    """Deterministic tar of the bundle (fixed order, mtime 0, no owner names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name, data in bundle.files().items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def is_tar_path(out: str | Path) -> bool:
    """Whether :func:`write_bundle` writes ``out`` as a file (``.tar``, ``.tar.zst``)."""
    p = Path(out)
    return p.suffix == ".tar" or p.name.endswith(bundle_zstd.SUFFIX)


def write_bundle(bundle: Bundle, out: str | Path) -> Path:
    """Write a bundle atomically: ``out`` ending in ``.tar`` gives a tar, ``.tar.zst`` that
    tar in one zstd frame (:func:`edge_agent.bundle_zstd.compress`), else a directory.

    Nothing half-written is ever left at ``out``. Raises ``OSError`` if unwritable.
    """
    out = Path(out)
    if out.name.endswith(bundle_zstd.SUFFIX):
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, bundle_zstd.compress(tar_bytes(bundle)))
        return out
    if out.suffix == ".tar":
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, tar_bytes(bundle))
        return out
    with staged_dir(out) as tmp:
        for name, data in bundle.files().items():
            (tmp / name).parent.mkdir(exist_ok=True)
            (tmp / name).write_bytes(data)
    return out
