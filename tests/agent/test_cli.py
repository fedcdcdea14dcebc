"""``edge-agent``: run end to end as a real process, predict, bench, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client, DigitsEval, b64

from edge_agent.cli import main

EXE = [sys.executable, "-m", "edge_agent.cli"]


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float = 30
                ) -> tuple[str, int, list[str]]:
    """Read stderr until the ready line; returns (host, port, stderr lines so far)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        m = re.search(r"edge-agent: ready: .* on http://([\d.]+):(\d+)", line)
        if m:
            return m.group(1), int(m.group(2)), lines
    proc.kill()
    pytest.fail("agent did not become ready:\n" + "".join(lines))


def test_run_serves_over_http_and_stops_cleanly_on_sigterm(digits: Any, digits_tar: Path,
                                                           digits_eval: DigitsEval,
                                                           tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nprofile = "generic-x86_64"\nthreads = 1\nlog_format = "json"\n'
                   '[http]\nmax_batch = 8\n')
    env = {**os.environ, "EDGE_AGENT__AGENT__DEVICE_ID": "e2e-1"}
    proc = subprocess.Popen(
        [*EXE, "run", "--config", str(cfg), "--model", str(digits_tar), str(digits.bundle_v2),
         "--http", "127.0.0.1:0", "--store", str(tmp_path / "store")],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        host, port, early = _wait_ready(proc)
        assert "digits v2" in early[-1] and "profile generic-x86_64" in early[-1]
        c = Client(host, port)
        status = c.get("/v1/models/digits").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2", "1"]
        r = c.post("/v1/models/digits:predict",
                   {"instances": [b64(digits_eval.png(i)) for i in range(8)]})
        assert r.status == 200
        top = [max(range(10), key=p.__getitem__) for p in r.json()["predictions"]]
        assert top == [int(v) for v in digits_eval.y[:8]]
        too_many = c.post("/v1/models/digits:predict", {"instances": [[1]] * 9})
        assert too_many.status == 400 and "limit of 8" in too_many.json()["error"]
        assert c.get("/v1/agent/status").json()["device_id"] == "e2e-1"
        c.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "edge-agent: stopped" in err
    logs = [json.loads(ln) for ln in [*early, *err.splitlines()] if ln.startswith("{")]
    assert any(r["msg"].startswith("model.loaded") for r in logs)  # log_format = "json"
    assert "Traceback" not in err


def test_run_with_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[http]\nport = 'x'\n")
    r = subprocess.run([*EXE, "run", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"edge-agent: error: {cfg}: http.port: expected int "
                                "1..65535, got 'x'")


def test_run_with_a_model_path_that_does_not_exist_refuses_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "digits-v1"
    r = subprocess.run([*EXE, "run", "--store", str(tmp_path / "store"), "--profile",
                        "generic-x86_64", "--http", "127.0.0.1:0", "--model", str(missing)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"edge-agent: error: command line: models[0].bundle: --model "
                                f"{missing}: no such bundle directory or .tar")
    assert not (tmp_path / "store").exists()  # refused before anything started


def test_run_on_a_busy_port_exits_1(digits: Any, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["run", "--store", str(tmp_path), "--profile", "generic-x86_64",
                     "--http", f"127.0.0.1:{port}", "--model", str(digits.bundle)])
    assert code == 1


def test_predict_prints_labels_and_scores(digits: Any, digits_eval: DigitsEval,
                                          tmp_path: Path, capsys: Any) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"{i}.png"
        f.write_bytes(digits_eval.png(i))
        files.append(str(f))
    assert main(["predict", str(digits.bundle), *files, "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(": ")[1].split()[0] for ln in lines] == [str(v) for v in digits_eval.y[:3]]
    assert main(["predict", str(digits.bundle), files[0], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["labels"][0] == str(digits_eval.y[0]) and len(doc["scores"]) == 3


def test_predict_with_a_bad_file_reports_it_and_exits_2(digits: Any, digits_eval: DigitsEval,
                                                        tmp_path: Path, capsys: Any) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(digits_eval.png(0))
    bad.write_bytes(b"nope")
    assert main(["predict", str(digits.bundle), str(bad), str(good)]) == 2
    out = capsys.readouterr()
    assert "bad.png: error: image: not a decodable image" in out.err
    assert out.out.startswith(f"{good}: {digits_eval.y[0]}")


def test_predict_with_a_missing_bundle_is_one_line_exit_2(tmp_path: Path) -> None:
    r = subprocess.run([*EXE, "predict", str(tmp_path / "nope"), "x.png"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no such bundle" in r.stderr


def test_bench_compares_bare_invoke_with_agent_predict(digits: Any, capsys: Any) -> None:
    assert main(["bench", str(digits.bundle), "--runs", "50", "--threads", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"] == 50 and doc["threads"] == 1
    assert doc["bare_invoke"]["per_s"] > 0 and doc["agent_predict"]["per_s"] > 0
    assert doc["throughput_ratio"] > 0
