"""A real ``edge-agent run`` with ``[grpc]`` on, and small helpers for the official clients.

The agent is always a separate process: tensorflow-serving-api registers TensorFlow's
protos (``tensorflow.TensorProto`` …) in protobuf's default pool, the agent keeps its own
copies in a private pool; here they never meet anyway.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attack_helpers import AgentProcess, agent_process

GRPC_TOML = "[grpc]\nenabled = true\nport = 0\n"


@dataclass
class GrpcAgent:
    proc: AgentProcess
    grpc: str  # host:port
    baseline_threads: Counter[str] = field(default_factory=Counter)  # set by a test

    @property
    def http(self) -> str:
        return f"http://{self.proc.host}:{self.proc.port}"

    def rest(self, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data,
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def thread_names(self) -> Counter[str]:
        """The agent's threads by OS name (edge_agent.threadname gives them theirs)."""
        names: Counter[str] = Counter()
        for t in Path(f"/proc/{self.proc.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # the thread ended while listed
                names[(t / "comm").read_text().strip()] += 1
        return names

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def log(self) -> str:
        return "".join(self.proc.lines)


@contextlib.contextmanager
def grpc_agent(tmp: Path, bundle: Path, *, toml: str = "", grpc_toml: str = GRPC_TOML,
               extra_models: tuple[Path, ...] = ()) -> Iterator[GrpcAgent]:
    """``edge-agent run`` serving ``bundle`` (and ``extra_models``) over REST and gRPC."""
    models = "".join(f'[[models]]\nbundle = "{m}"\n' for m in extra_models)
    with agent_process(tmp, bundle, toml=toml + grpc_toml + models) as proc:
        m = None
        deadline = time.monotonic() + 5
        while m is None and time.monotonic() < deadline:
            m = next((re.search(r"grpc on ([\d.]+:\d+)", ln) for ln in proc.lines
                      if "grpc on" in ln), None)
        assert m is not None, "no gRPC address in:\n" + "".join(proc.lines)
        yield GrpcAgent(proc, m.group(1))
