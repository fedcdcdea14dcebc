"""``edge-agent bench --sweep``: find the workers × threads split for this board by measuring.

    edge-agent bench --sweep --model BUNDLE [--seconds S] [--concurrency 1,2,4] [--rounds N]
                     [--profile NAME|PATH] [--write-profile DIR] [--json]

For every split of the profile's cores into ``workers`` interpreters of ``threads`` threads
(``workers × threads ≤ cores``), a real ``edge-agent run`` serves the bundle on a loopback
port with ``[agent] workers`` / ``threads`` set, and a closed-loop client (keep-alive
connections, each sending its next request when the previous answer arrived) posts the
bundle's golden input as a raw tensor (``application/octet-stream``, docs/rest.md) at each
concurrency for ``--seconds``. So every figure went through the real serving path: the HTTP
loop, admission, decode permits, the interpreter pool and the JSON answer.

Per split and concurrency: requests/s, p50 and p99 latency, and the agent process's CPU
per request (``/proc/PID/stat`` utime + stime over the window, so the client's own CPU is
not counted). The best split has the highest geometric mean of requests/s over the
concurrencies (so neither the one-client latency nor the many-client throughput alone
decides); ``--write-profile DIR`` writes ``DIR/<profile>.toml``, the profile with
``default_workers`` / ``default_threads`` set to it (atomically; docs/agent.md, "Tuning
workers and threads"): with ``EDGE_PROFILES_DIR=DIR`` it overrides the shipped profile of
the same name.

The pure part (:func:`splits`, :func:`best_split`, :func:`medians`,
:func:`profile_override`) takes no process, socket or clock; :func:`sweep` is the IO shell.
Raises BadInputError for a bundle the sweep cannot drive (no single tensor input) and
EdgeError when an agent does not start.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_agent.errors import BadInputError, EdgeError

START_TIMEOUT_S = 120.0  # an agent that is not ready by then fails the sweep
REQUEST_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 64 << 20  # a client never reads more than this for one answer
MAX_SECONDS = 600.0


@dataclass(frozen=True)
class Row:
    """One split at one concurrency."""

    workers: int
    threads: int
    concurrency: int
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_req: float


# ---------------------------------------------------------------------------- pure core


def splits(cores: int) -> list[tuple[int, int]]:
    """Every (workers, threads) with workers × threads ≤ cores, fewest workers first."""
    return [(w, t) for w in range(1, cores + 1) for t in range(1, cores // w + 1)]


def score(rows: Sequence[Row]) -> float:
    """Geometric mean of req/s over the concurrencies of one split (0 when one failed)."""
    rates = [r.req_per_s for r in rows]
    if not rates or min(rates) <= 0:
        return 0.0
    return math.exp(sum(math.log(x) for x in rates) / len(rates))


def best_split(rows: Sequence[Row]) -> tuple[int, int]:
    """The split with the highest :func:`score`; ties go to fewer interpreters (memory)."""
    by: dict[tuple[int, int], list[Row]] = {}
    for r in rows:
        by.setdefault((r.workers, r.threads), []).append(r)
    if not by:
        raise BadInputError("no measurements to choose a split from")
    return max(by, key=lambda k: (round(score(by[k]), 6), -k[0] * k[1], -k[0]))


def profile_override(profile_text: str, workers: int, threads: int, note: str) -> str:
    """``profile_text`` (a device profile's TOML) with ``default_workers`` and
    ``default_threads`` set; other keys and comments kept. ``note`` becomes a comment."""
    lines = [ln for ln in profile_text.splitlines()
             if not re.match(r"\s*default_(workers|threads)\s*=", ln)]
    at = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    head = [f"# {n}" for n in note.splitlines()]
    keys = [f"default_threads = {threads}", f"default_workers = {workers}"]
    return "\n".join(head + lines[:at] + keys + [""] + lines[at:]) + "\n"


def medians(rows: Sequence[Row]) -> list[Row]:
    """One row per (workers, threads, concurrency): the median of its rounds' figures."""
    import statistics  # here: decimal and fractions stay out of every `edge-agent run`

    by: dict[tuple[int, int, int], list[Row]] = {}
    for r in rows:
        by.setdefault((r.workers, r.threads, r.concurrency), []).append(r)

    def med(rs: list[Row], k: str) -> float:
        return round(statistics.median(float(getattr(r, k)) for r in rs), 4)

    return [Row(w, t, c, sum(r.requests for r in rs), sum(r.errors for r in rs),
                med(rs, "req_per_s"), med(rs, "p50_ms"), med(rs, "p99_ms"),
                med(rs, "cpu_ms_per_req")) for (w, t, c), rs in by.items()]


def table(rows: Sequence[Row]) -> str:
    """The measured rows as a fixed-width table."""
    out = [f"{'workers':>7} {'threads':>7} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
           f"{'CPU ms/req':>10} {'errors':>6}"]
    out += [f"{r.workers:>7} {r.threads:>7} {r.concurrency:>3} {r.req_per_s:>9.1f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.cpu_ms_per_req:>10.3f} {r.errors:>6}"
            for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------- IO shell


def _request(name: str, body: bytes, host: str) -> bytes:
    head = (f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _read_answer(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP answer from ``sock`` (``buf`` keeps what follows it); its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the answer's head")
        buf += chunk
        if len(buf) > MAX_ANSWER_BYTES:
            raise ConnectionError("answer head over the bound")
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    m = re.search(r"(?im)^content-length:\s*(\d+)", head)
    size = int(m.group(1)) if m else 0
    if size > MAX_ANSWER_BYTES:
        raise ConnectionError(f"answer of {size} bytes, over the bound")
    while len(buf) < end + size:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the answer's body")
        buf += chunk
    del buf[:end + size]
    return int(head.split(" ", 2)[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(host: str, port: int, request: bytes, concurrency: int, seconds: float,
         cpu: Callable[[], float]) -> tuple[int, int, list[float], float, float]:
    """A closed loop of ``concurrency`` keep-alive clients for ``seconds``:
    (answers, errors, latencies s, wall s, agent CPU s)."""
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start = threading.Barrier(concurrency + 1, timeout=REQUEST_TIMEOUT_S)
    stop_at = [0.0]

    def client(i: int) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=REQUEST_TIMEOUT_S)
        except OSError:
            errors[i] += 1
            start.wait()  # the others still start; this one counts as failed
            return
        buf = bytearray()
        start.wait()
        try:
            while (t0 := time.perf_counter()) < stop_at[0]:
                sock.sendall(request)
                if _read_answer(sock, buf) == 200:
                    lat[i].append(time.perf_counter() - t0)
                else:
                    errors[i] += 1
        except OSError:
            errors[i] += 1
        finally:
            sock.close()

    ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in ts:
        t.start()
    c0, w0 = cpu(), time.perf_counter()
    stop_at[0] = w0 + seconds
    start.wait()
    for t in ts:
        t.join(seconds + REQUEST_TIMEOUT_S)
    wall, used = time.perf_counter() - w0, cpu() - c0
    flat = [x for xs in lat for x in xs]
    return len(flat), sum(errors), flat, wall, used


class LocalAgent:
    """``edge-agent run`` on a loopback port with one bundle, ``workers`` and ``threads``."""

    def __init__(self, bundle: Path, profile: str, workers: int, threads: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="edge-agent-sweep-"))
        conf = self.tmp / "agent.toml"
        conf.write_text(f'[agent]\ndevice_id = "sweep"\nstore_dir = "{self.tmp / "store"}"\n'
                        f'profile = {json.dumps(profile)}\nworkers = {workers}\n'
                        f'threads = {threads}\nprobe_runtime = false\n'
                        '[http]\nhost = "127.0.0.1"\nport = 0\nui = false\n'
                        f'queue_size = 64\n[[models]]\nbundle = {json.dumps(str(bundle))}\n')
        self.log = self.tmp / "agent.log"
        root = Path(__file__).resolve().parents[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run",
                                          "--config", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (m := re.search(r"ready: .* on http://([\d.]+):(\d+)", self._log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self._log()[-800:]
                self.stop()
                raise EdgeError(f"the agent for {workers}x{threads} did not start: {tail}")
            time.sleep(0.1)
        self.host, self.port = m.group(1), int(m.group(2))

    def _log(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _golden_request(bundle_path: Path) -> tuple[str, bytes]:
    from edge_agent.bundle import read_bundle

    b = read_bundle(bundle_path)
    m = b.manifest
    if len(m.inputs) != 1:
        raise BadInputError(f"{bundle_path}: the sweep drives single-input models; this one "
                            f"takes {len(m.inputs)} ({', '.join(s.name for s in m.inputs)})")
    if not m.golden:
        raise BadInputError(f"{bundle_path}: no golden vectors to send")
    return b.name, m.golden[0].input.decode().tobytes()


def sweep(bundle: Path, *, profile: str, cores: int, concurrencies: Sequence[int],
          seconds: float, rounds: int = 1, log: Callable[[str], None] = print) -> list[Row]:
    """Measure every split (see module docstring), ``rounds`` times in alternating order
    (each round tries every split once, the next round in reverse order, so a change of
    machine load falls on all of them); every round's rows. Raises BadInputError, EdgeError."""
    import statistics

    name, body = _golden_request(bundle)
    rows: list[Row] = []
    order = splits(cores)
    for workers, threads in [s for r in range(rounds) for s in (order if r % 2 == 0
                                                                 else order[::-1])]:
        agent = LocalAgent(bundle, profile, workers, threads)
        try:
            req = _request(name, body, agent.host)
            load(agent.host, agent.port, req, 1, min(1.0, seconds), lambda: 0.0)  # warm up
            for c in concurrencies:
                n, err, lat, wall, cpu = load(agent.host, agent.port, req, c, seconds,
                                              functools.partial(_cpu_s, agent.proc.pid))
                ms = sorted(x * 1000 for x in lat) or [0.0]
                rows.append(Row(workers, threads, c, n, err, round(n / wall, 1),
                                round(statistics.median(ms), 3),
                                round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3),
                                round(cpu * 1000 / max(n, 1), 4)))
                log(table(rows[-1:]).splitlines()[1])
        finally:
            agent.stop()
    return rows


def add_sweep_options(b: argparse.ArgumentParser, plain: Callable[[argparse.Namespace], int]
                      ) -> None:
    """The ``--sweep`` options of ``edge-agent bench``; without ``--sweep`` ``plain`` runs."""
    b.add_argument("--sweep", action="store_true",
                   help="try every workers x threads split through a real agent")
    b.add_argument("--model", type=Path, help="the bundle to sweep (else BUNDLE)")
    b.add_argument("--seconds", type=float, default=5.0, help="per split and concurrency")
    b.add_argument("--concurrency", default="1,2,4", help="closed-loop clients, e.g. 1,2,4")
    b.add_argument("--rounds", type=int, default=1, help="alternating rounds (medians)")
    b.add_argument("--profile", default="auto", help="profile name or path (its cores)")
    b.add_argument("--write-profile", type=Path, metavar="DIR",
                   help="write DIR/<profile>.toml with the best split as its defaults "
                        "(an override: EDGE_PROFILES_DIR=DIR)")
    b.set_defaults(func=lambda a: cmd_sweep(a) if a.sweep else plain(a))


def cmd_sweep(a: argparse.Namespace) -> int:
    from edge_agent.profiles import detect_profile, load_profile

    bundle = a.model or a.bundle
    if bundle is None:
        raise BadInputError("bench --sweep needs a bundle: --model BUNDLE")
    try:
        concs = sorted({int(x) for x in a.concurrency.split(",") if x.strip()})
    except ValueError as e:
        raise BadInputError(f"--concurrency: expected numbers like 1,2,4, got "
                            f"{a.concurrency!r}") from e
    if not concs or concs[0] < 1 or concs[-1] > 256:
        raise BadInputError(f"--concurrency: expected 1..256, got {a.concurrency!r}")
    if not 1 <= a.rounds <= 100:
        raise BadInputError(f"--rounds: expected 1..100, got {a.rounds}")
    if not 0 < a.seconds <= MAX_SECONDS:
        raise BadInputError(f"--seconds: expected 0 < S <= {MAX_SECONDS:g}, got {a.seconds}")
    _golden_request(Path(bundle))  # a bundle the sweep cannot drive fails before any agent
    prof = load_profile(detect_profile() if a.profile == "auto" else a.profile)
    cores = min(prof.cores, os.cpu_count() or prof.cores)
    say: Callable[[str], None] = (lambda _s: None) if a.json else print
    say(f"sweep {bundle} on profile {prof.name} ({cores} cores), c={concs}, "
        f"{a.seconds:g} s each, load {os.getloadavg()[0]:.2f}")
    say(table([]))
    rows = medians(sweep(Path(bundle), profile=prof.source or prof.name, cores=cores,
                         concurrencies=concs, seconds=a.seconds, rounds=a.rounds, log=say))
    if a.rounds > 1:
        say(f"medians of {a.rounds} rounds:\n{table(rows)}")
    w, t = best_split(rows)
    result = {"profile": prof.name, "cores": cores, "bundle": str(bundle),
              "rounds": a.rounds, "rows": [asdict(r) for r in rows],
              "best": {"workers": w, "threads": t},
              "loadavg": os.getloadavg()[0]}
    if a.write_profile:
        result["wrote"] = str(write_override(prof.source, prof.name, a.write_profile, w, t,
                                             f"edge-agent bench --sweep on {bundle}: best "
                                             f"{w} workers x {t} threads\n{table(rows)}"))
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"best: {w} workers x {t} threads (load {result['loadavg']:.2f})"
              + (f"; wrote {result['wrote']}" if a.write_profile else ""))
    return 0


def write_override(source: str, name: str, out_dir: Path, workers: int, threads: int,
                   note: str) -> Path:
    """``out_dir/<name>.toml``: the profile at ``source`` with the split as its defaults,
    validated as a profile before it is written (atomically). The file keeps the profile's
    name (update targeting uses it), so it overrides the shipped one when ``out_dir`` is
    ``EDGE_PROFILES_DIR``. Raises BadInputError, ProfileError."""
    import tomllib

    from edge_agent.fsutil import atomic_write_text
    from edge_agent.profiles import parse_profile

    if not source or not Path(source).is_file():
        raise BadInputError(f"profile {name} has no file to start from")
    out = out_dir / f"{name}.toml"
    text = profile_override(Path(source).read_text(encoding="utf-8"), workers, threads, note)
    parse_profile(tomllib.loads(text), str(out))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out
