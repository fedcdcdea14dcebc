"""edge-fleet keygen / repo / publish / serve, through the real CLI, to the real agent."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from update_helpers import DEVICE, Bundles, DeviceFactory

from fleet import keys
from fleet.cli import main as fleet_main
from fleet.repo import FleetRepo
from fleet.serve import RepoServer


def test_keygen_writes_0600_encrypted_keys_and_refuses_mistakes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGE_FLEET_PASSPHRASE", "correct horse")
    assert fleet_main(["keygen", "root-a", "targets-a", "--out", str(tmp_path)]) == 0
    key = tmp_path / "root-a.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    pub = keys.load_public(tmp_path / "root-a.pub")
    assert keys.load_signer(key, b"correct horse").public_key.keyid == pub.keyid
    with pytest.raises(keys.KeyFileError, match="key is encrypted"):
        keys.load_signer(key, None)
    with pytest.raises(keys.KeyFileError, match="wrong passphrase"):
        keys.load_signer(key, b"wrong")
    assert fleet_main(["keygen", "root-a", "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    os.chmod(key, 0o640)
    with pytest.raises(keys.KeyFileError, match="chmod 600"):
        keys.load_signer(key, b"correct horse")


def _cli_repo(tmp: Path) -> Path:
    k = tmp / "keys"
    assert fleet_main(["keygen", "root-a", "root-b", "targets", "snapshot", "timestamp",
                       "--out", str(k)]) == 0
    repo = tmp / "cli-repo"
    assert fleet_main(["repo", "init", str(repo), "--root", str(k / "root-a.pub"),
                       str(k / "root-b.pub"), "--root-threshold", "2",
                       "--targets", str(k / "targets.pub"), "--snapshot", str(k / "snapshot.pub"),
                       "--timestamp", str(k / "timestamp.pub"),
                       "--key", str(k / "root-a.key"), "--key", str(k / "root-b.key")]) == 0
    return repo


def test_repo_timestamp_before_any_release_is_bad_input_not_a_traceback(
        tmp_path: Path, fleet_keys_: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    k = fleet_keys_
    repo = FleetRepo.create(tmp_path / "repo", keys={r: [k["root-a"].public] for r in (
        "root", "targets", "snapshot", "timestamp")}, thresholds={}, signers=[k["root-a"].signer])
    rc = fleet_main(["repo", "timestamp", str(repo.path), "--key", str(k["root-a"].path)])
    assert rc == 2
    assert "nothing released yet" in capsys.readouterr().err
    assert repo.latest_version("timestamp") == 0  # nothing was written


def test_cli_publish_and_presigned_metadata_reach_the_device(
        tmp_path: Path, bundles: Bundles, start_device: DeviceFactory, mosquitto: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_FLEET_PASSPHRASE", raising=False)
    repo = _cli_repo(tmp_path)
    dev = start_device(root_file=str(repo / "metadata" / "1.root.json"))
    k = tmp_path / "keys"
    online = [a for n in ("targets", "snapshot", "timestamp")
              for a in ("--key", str(k / f"{n}.key"))]
    n = dev.mark()
    assert fleet_main(["publish", str(bundles.v2), "--repo", str(repo), *online,
                       "--broker", mosquitto.url, "--device", DEVICE]) == 0
    assert dev.outcome(n).result == "committed" and dev.serving() == 2
    # sign on an offline copy; publish from a machine holding no keys at all
    offline = FleetRepo(shutil.copytree(repo, tmp_path / "offline"))
    from edge_agent.update.wire import Audience
    from fleet.publish import sign_bundle

    sign_bundle(offline, bundles.v3, keys.load_signers(
        [k / "targets.key", k / "snapshot.key", k / "timestamp.key"], None),
        audience=Audience((DEVICE,), ()))
    n = dev.mark()
    assert fleet_main(["publish", str(bundles.v3), "--repo", str(repo),
                       "--signed-metadata", str(offline.meta_dir),
                       "--broker", mosquitto.url, "--device", DEVICE]) == 0
    assert dev.outcome(n).result == "committed" and dev.serving() == 3
    assert fleet_main(["repo", "show", str(repo)]) == 0


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    c, k = tmp / "mirror.pem", tmp / "mirror.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_update_over_an_https_mirror(tmp_path: Path, bundles: Bundles, fleet: Any,
                                     start_device: DeviceFactory) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = RepoServer(fleet.repo.path, port=0, ssl_context=ctx).start()
    try:
        assert srv.url.startswith("https://")
        dev = start_device(http_ca_file=str(cert), transport="http")
        n = dev.mark()
        fleet.publish(bundles.v2, http_url=srv.url)  # chunks on MQTT too; device uses http
        out = dev.outcome(n)
    finally:
        srv.stop()
    assert (out.result, out.version) == ("committed", 2), out
    assert dev.events_of("update.downloaded")[-1].data["sources"] == ["http"]


def test_serve_on_a_busy_port_is_one_line_naming_the_port_and_exit_2(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "fleet.cli", "serve", str(tmp_path),
                            "--port", str(port)], capture_output=True, text=True, timeout=30,
                           check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"edge-fleet: error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "pass another --port"]
    assert r.stdout == ""


def _readme_commands(prefix: str) -> list[list[str]]:
    """The README's ``edge-fleet …`` lines (continuations joined, comments dropped)."""
    import shlex

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = text.replace("\\\n", " ").splitlines()
    return [shlex.split(ln, comments=True) for ln in lines if ln.startswith(prefix)]


def test_the_readme_simulate_line_parses_as_written() -> None:
    from fleet import simulate
    from fleet.cli import build_parser

    (argv,) = _readme_commands("edge-fleet simulate ")
    args = build_parser().parse_args(argv[1:])  # argparse exits 2 on a missing flag
    assert args.func.__module__ == simulate.__name__ and args.count == 500
    assert (args.root, args.bundle) == (Path("repo/metadata/1.root.json"),
                                        Path("bundles/digits-v1"))


def _all_parsers() -> list[tuple[str, Any]]:
    import argparse

    from fleet.cli import build_parser

    out, todo = [], [build_parser()]
    while todo:
        p = todo.pop()
        out.append((p.prog, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(dict.fromkeys(a.choices.values()))
    return out


@pytest.mark.parametrize("prog,parser", _all_parsers(), ids=lambda v: str(v))
def test_help_is_plain_text_without_docstring_markup(prog: str, parser: Any) -> None:
    text = parser.format_help()
    for markup in ("``", ":func:", ":meth:", ":class:", ":mod:", ":attr:", "\n::\n"):
        assert markup not in text, f"{prog} --help shows {markup!r}"
