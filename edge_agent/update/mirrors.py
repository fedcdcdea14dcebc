"""Which HTTP(S) mirrors an update may use: pure, no network.

The announcement is unsigned, so its ``mirrors`` list is a suggestion from whoever could
publish on the announce topic. A device uses a mirror only when someone it trusts named
it:

* **metadata** files (root, timestamp, snapshot, targets — fetched before anything is
  verified) only from mirrors in the device's own ``[update] mirror_allowlist``;
* the **target**, once the targets metadata that lists it has been verified, also from
  the mirrors its *signed* entry names (``custom.edge.mirrors``, written by
  ``edge-fleet publish --http-url``).

Every other announced mirror is ignored, never contacted, and reported by name. An
allowlist entry allows the URL itself and everything below it on a path boundary:
``https://updates.example/`` allows ``https://updates.example/line-3/`` but not
``https://updates.example.evil/``. The empty allowlist (the default) allows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


def normalise(url: str) -> str:
    """A mirror base URL ends with ``/`` (``<mirror>metadata/…``, ``<mirror>targets/…``)."""
    return url if url.endswith("/") else url + "/"


def allowed(url: str, allowlist: tuple[str, ...]) -> bool:
    """``url`` is an entry of ``allowlist`` or lies below one (path boundary)."""
    u = normalise(url)
    return any(u.startswith(normalise(p)) for p in allowlist)


def _unique(urls: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(normalise(u) for u in urls))


@dataclass(frozen=True)
class MirrorChoice:
    """The announced mirrors sorted by who vouches for them (see the module docstring)."""

    announced: tuple[str, ...]
    allowlist: tuple[str, ...]

    def for_metadata(self) -> tuple[str, ...]:
        """Mirrors metadata may come from: announced and in the config allowlist."""
        return tuple(m for m in _unique(self.announced) if allowed(m, self.allowlist))

    def for_target(self, signed: tuple[str, ...]) -> tuple[str, ...]:
        """Mirrors the verified target may come from: the allowlisted announced ones and
        every mirror its signed entry names, in the announcement's order, then the
        signed ones it did not list."""
        trusted = set(_unique(signed))
        chosen = tuple(m for m in _unique(self.announced)
                       if m in trusted or allowed(m, self.allowlist))
        return chosen + tuple(m for m in _unique(signed) if m not in chosen)

    def ignored(self, signed: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Announced mirrors that neither the config allowlist nor ``signed`` names."""
        used = set(self.for_target(signed))
        return tuple(m for m in _unique(self.announced) if m not in used)
