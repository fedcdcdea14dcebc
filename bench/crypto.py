"""Benchmark: what sealed (encrypted) bundles cost at start-up (issue 15 part 3).

::

    python bench/crypto.py [--mib 20] [--rounds 7] [--bundle DIR]

1. **Decrypt** a sealed bundle whose ``model.tflite`` is ``--mib`` MiB (random bytes: the
   AES-GCM cost does not depend on what the bytes are) — key unwrap, every part's
   decryption and tag, the model's sha256 check and manifest parse, i.e. exactly what
   the agent does per sealed version at start-up (``ModelStore.read``) — against reading
   the same bundle in plaintext from disk.
2. **Load**: ``ModelStore.read`` + a LiteRT interpreter for a real bundle (``--bundle``,
   e.g. MobileNetV2 int8), plaintext store vs sealed store.

Rounds alternate plaintext and sealed; medians and the ratio of medians are printed, so
machine load cancels (note ``uptime`` with the figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from edge_agent.bundle import Bundle, read_bundle, sha256_bytes  # noqa: E402
from edge_agent.crypto.device_key import generate  # noqa: E402
from edge_agent.crypto.sealed import seal_files  # noqa: E402
from edge_agent.store import ModelStore  # noqa: E402


def _stores(tmp: Path, b: Bundle) -> tuple[ModelStore, ModelStore]:
    key = tmp / "device.key"
    pub = generate(key)
    plain = ModelStore(tmp / "plain", max_bundle_bytes=1 << 30)
    sealed = ModelStore(tmp / "sealed", max_bundle_bytes=1 << 30, device_key=key)
    plain.install(b)
    data = seal_files(b.files(), name=b.name, version=b.version,
                      target_profiles=b.manifest.target_profiles,
                      recipients=[pub, X25519PrivateKey.generate().public_key()])
    sealed.install(replace(b, sealed=data))
    return plain, sealed


def _timed(fn: object, rounds: int) -> tuple[list[float], list[float]]:
    a: list[float] = []
    s: list[float] = []
    for _ in range(rounds):
        for out, store in ((a, 0), (s, 1)):
            t0 = time.perf_counter()
            fn(store)  # type: ignore[operator]
            out.append(time.perf_counter() - t0)
    return a, s


def _report(what: str, plain: list[float], sealed: list[float]) -> None:
    mp, ms = statistics.median(plain) * 1e3, statistics.median(sealed) * 1e3
    print(f"{what}: plaintext {mp:.1f} ms, sealed {ms:.1f} ms (+{ms - mp:.1f} ms), "
          f"ratio of medians {ms / mp:.2f} (min–max sealed {min(sealed) * 1e3:.1f}–"
          f"{max(sealed) * 1e3:.1f} ms)")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--bundle", type=Path, help="a real bundle for the load comparison")
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = read_bundle(a.bundle) if a.bundle else None
        model = os.urandom(a.mib << 20)
        if base is not None:
            m = replace(base.manifest, model_sha256=sha256_bytes(model), model_size=len(model))
            big = Bundle(m, model, base.report, "bench")
            plain, sealed = _stores(tmp / "big", big)
            stores = (plain, sealed)
            pa, se = _timed(lambda i: stores[i].load(big.name, big.version), a.rounds)
            _report(f"start-up read of a {a.mib} MiB model (decrypt + sha256 + parse)", pa, se)
            from edge_agent.runtime.backends import select_runtime
            from edge_agent.runtime.model import LoadedModel
            rt = select_runtime()
            rp, rs = _stores(tmp / "real", base)
            real = (rp, rs)
            pa, se = _timed(lambda i: LoadedModel(rt, real[i].load(
                base.name, base.version).model_bytes, num_threads=1), a.rounds)
            _report(f"read + LiteRT load of {base.name} ({base.manifest.model_size / 2**20:.1f}"
                    f" MiB, {rt.name})", pa, se)
        else:
            print("--bundle is needed (its manifest is reused)")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
