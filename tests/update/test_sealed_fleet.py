"""The fleet side of sealed bundles: the device-key registry (``edge-fleet device-keys``),
``device:ID`` / ``group:NAME`` recipients, and ``edge-fleet reencrypt`` of a release for
its group after a member rotated, joined or left — through the real CLI, real keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from test_sealed_bundles import header_of
from update_helpers import Bundles

from edge_agent.bundle import read_bundle
from edge_agent.crypto.sealed import SealedBundleError, fingerprint, open_files, public_bytes
from fleet.cli import main as fleet_main
from fleet.device_keys import DeviceKeysError, Registry, load


def hexkey(k: X25519PrivateKey) -> str:
    return public_bytes(k.public_key()).hex()


def fp(k: X25519PrivateKey) -> str:
    return fingerprint(k.public_key())


def ids(path: Path) -> set[str]:
    return {r["id"] for r in header_of(path.read_bytes())[0]["recipients"]}


def test_the_registry_refuses_each_mistake_naming_it() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    reg = Registry().add("pi-a", hexkey(a), ["lab"])
    with pytest.raises(DeviceKeysError, match="already registered"):
        reg.add("pi-a", hexkey(b))
    with pytest.raises(DeviceKeysError, match="64 hex digits"):
        reg.add("pi-b", "abc")
    with pytest.raises(DeviceKeysError, match="device name"):
        reg.add("pi b", hexkey(b))
    with pytest.raises(DeviceKeysError, match="current or previous"):
        reg.rotate("pi-a", hexkey(a))
    with pytest.raises(DeviceKeysError, match="no device 'pi-z'"):
        reg.rotate("pi-z", hexkey(b))
    with pytest.raises(DeviceKeysError, match="group 'line-9' has no device"):
        reg.group("line-9")
    r2 = reg.rotate("pi-a", hexkey(b))
    assert (r2.entry("pi-a").key, r2.entry("pi-a").previous) == (hexkey(b), hexkey(a))
    with pytest.raises(DeviceKeysError, match="current or previous"):
        r2.rotate("pi-a", hexkey(a))  # rotating back to the old key is a mistake too
    assert reg.entry("pi-a").key == hexkey(a)  # frozen: the old registry did not move


SMALL_ORDER = ["00" * 32, "01" + "00" * 31,  # X25519 points whose shared secret is all zero
               "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"]


@pytest.mark.parametrize("bad", SMALL_ORDER)
def test_a_small_order_key_is_refused_where_it_is_given_naming_it(
        tmp_path: Path, bundles: Bundles, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped or forged recipient that is a small-order point (64 zeros) passed as a
    key: the registry took it, and sealing then failed with cryptography's bare "Error
    computing shared key." naming neither the key nor the device."""
    with pytest.raises(DeviceKeysError, match="small-order"):
        Registry().add("pi-a", bad)
    out = tmp_path / "x.sealed"
    assert fleet_main(["encrypt", str(bundles.v2), "--to", bad, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert bad in err and "small-order" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_malformed_registry_file_is_named(tmp_path: Path, bundles: Bundles,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "device-keys.json"
    reg.write_text(json.dumps({"devices": {"pi-a": {"key": "zz"}}}))
    with pytest.raises(DeviceKeysError, match=f"{reg}: key 'zz'"):
        load(reg)
    assert fleet_main(["encrypt", str(bundles.v3), "--to", "group:lab", "--device-keys",
                       str(reg), "-o", str(tmp_path / "x")]) == 2
    assert f"--to group:lab: {reg}: key 'zz'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert fleet_main(["encrypt", str(bundles.v3), "--to", "device:pi-a", "--device-keys",
                       str(tmp_path / "none.json"), "-o", str(tmp_path / "x")]) == 2
    assert "no device-key registry" in capsys.readouterr().err


def test_reencrypt_for_a_group_after_a_rotation_a_join_and_a_leave(
        tmp_path: Path, bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    """v3 sealed for group lab (pi-a, pi-b); pi-a rotates, pi-c joins, pi-b leaves;
    ``reencrypt --was`` seals v3 again for exactly the group as it is now and lists what
    changed; each key opens what it is a recipient of and nothing else."""
    reg = ["--device-keys", str(tmp_path / "device-keys.json")]
    a1, a2, b, c = (X25519PrivateKey.generate() for _ in range(4))
    for dev, k in (("pi-a", a1), ("pi-b", b)):
        assert fleet_main(["device-keys", "add", dev, hexkey(k), "--group", "lab", *reg]) == 0
    old, new = tmp_path / "v3.sealed", tmp_path / "v3-again.sealed"
    assert fleet_main(["encrypt", str(bundles.v3), "--to", "group:lab", *reg, "-o",
                       str(old)]) == 0
    assert ids(old) == {fp(a1), fp(b)}
    assert fleet_main(["device-keys", "rotate", "pi-a", hexkey(a2), *reg]) == 0
    assert fleet_main(["device-keys", "add", "pi-c", hexkey(c), "--group", "lab", *reg]) == 0
    assert fleet_main(["device-keys", "remove", "pi-b", *reg]) == 0
    capsys.readouterr()
    assert fleet_main(["device-keys", "list", "--group", "lab", "--json", *reg]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed) == ["pi-a", "pi-c"]
    assert listed["pi-a"]["fingerprint"] == fp(a2) and listed["pi-a"]["previous"] == hexkey(a1)

    assert fleet_main(["reencrypt", str(bundles.v3), "--to", "group:lab", *reg, "--was",
                       str(old), "-o", str(new)]) == 0
    out = capsys.readouterr().out
    assert ids(new) == {fp(a2), fp(c)}
    added, dropped = out.split("added ")[1].split("; dropped ")
    assert set(added.split(", ")) == {fp(a2), fp(c)}
    assert set(dropped.split(" (")[0].split(", ")) == {fp(a1), fp(b)}
    plain = read_bundle(bundles.v3).files()
    for k in (a2, c):
        assert open_files(new.read_bytes(), k, max_bytes=1 << 26)[1] == plain
    for k in (a1, b):
        with pytest.raises(SealedBundleError) as ei:
            open_files(new.read_bytes(), k, max_bytes=1 << 26)
        assert ei.value.code == "not_for_this_device"
    assert header_of(new.read_bytes())[0]["parts"] != header_of(old.read_bytes())[0]["parts"]


def test_reencrypt_refuses_a_was_of_another_release(tmp_path: Path, bundles: Bundles,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    k = hexkey(X25519PrivateKey.generate())
    v2 = tmp_path / "v2.sealed"
    assert fleet_main(["encrypt", str(bundles.v2), "--to", k, "-o", str(v2)]) == 0
    capsys.readouterr()
    assert fleet_main(["reencrypt", str(bundles.v3), "--to", k, "--was", str(v2), "-o",
                       str(tmp_path / "v3.sealed")]) == 2
    assert "not the same release" in capsys.readouterr().err
    assert not (tmp_path / "v3.sealed").exists()


def test_a_device_in_two_named_groups_is_one_recipient(tmp_path: Path,
                                                        bundles: Bundles) -> None:
    reg = ["--device-keys", str(tmp_path / "k.json")]
    a = X25519PrivateKey.generate()
    assert fleet_main(["device-keys", "add", "pi-a", hexkey(a), "--group", "lab", "--group",
                       "line-3", *reg]) == 0
    out = tmp_path / "v3.sealed"
    assert fleet_main(["encrypt", str(bundles.v3), "--to", "group:lab", "group:line-3",
                       "device:pi-a", *reg, "-o", str(out)]) == 0
    assert ids(out) == {fp(a)}
