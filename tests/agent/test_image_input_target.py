"""Image requests go to the manifest's image input, never to "the first input" (issue 12).

The image input is the one ``preprocessing.image_input`` names, else the model's only
NHWC input of 1 or 3 channels; the converter records the name for a model with several
inputs. A request that sends an image to a model without one, to a model with several
and no name saying which, or that sends only an image to a model that needs more inputs,
is a 400 naming the model's inputs; the model keeps serving.

Real Keras models converted by the real CLI, a real ``edge-agent run``, real REST.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from model_fixtures import convert_cli
from multi_models import Built, two_input

from edge_agent.bundle import read_bundle
from edge_agent.errors import ManifestError
from edge_agent.manifest import parse_manifest


@dataclass(frozen=True)
class Models:
    two_in: Built
    two_in_bundle: Path
    twins: Path  # two 8x8x1 inputs, no --image-input: the agent cannot tell which
    twins_named: Path  # the same model converted with --image-input right


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def _twins(d: Path) -> Path:
    from converter.tfload import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(2)
    left, right = (tf.keras.Input((8, 8, 1), name=n) for n in ("left", "right"))
    h = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(left),
                                       tf.keras.layers.Flatten()(right)])
    model = tf.keras.Model([left, right], tf.keras.layers.Dense(
        2, activation="softmax", name="same")(h))
    model.save(d / "twins.keras")
    rng = np.random.default_rng(2)
    np.savez(d / "twins.npz", left=rng.uniform(0, 1, (32, 8, 8, 1)).astype(np.float32),
             right=rng.uniform(0, 1, (32, 8, 8, 1)).astype(np.float32))
    return d / "twins.keras"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    d = tmp_path_factory.mktemp("image-input")
    built = two_input(d)
    common = ("--profile", "generic-x86_64", "--latency-runs", 0)
    r = convert_cli("convert", built.keras, "--representative", built.calib, "--name", "twoin",
                    *common, "-o", d / "twoin")
    assert r.returncode == 0, r.stderr
    twins = _twins(d)
    for name, extra in (("twins", ()), ("twins-named", ("--image-input", "right"))):
        r = convert_cli("convert", twins, "--representative", d / "twins.npz", "--name", name,
                        "--mode", "dynamic", *common, *extra, "-o", d / name)
        assert r.returncode == 0, r.stderr
    return Models(built, d / "twoin", d / "twins", d / "twins-named")


@pytest.fixture(scope="module")
def client(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    toml = "".join(f'[[models]]\nbundle = "{b}"\n' for b in (models.twins, models.twins_named))
    with agent_process(tmp_path_factory.mktemp("agent"), models.two_in_bundle,
                       toml=toml) as proc:
        c = Client(proc.host, proc.port)
        yield c
        c.close()


def _pixels(i: int) -> np.ndarray:
    return (np.arange(64).reshape(8, 8) * (i + 1) * 3 % 256).astype(np.uint8)


def _still_serves(c: Client, m: Models) -> None:
    held = m.two_in.held
    ok = c.post("/v1/models/twoin:predict", {"inputs": {k: v[:1].tolist() for k, v in
                                                        held.items()}})
    assert ok.status == 200 and ok.json()["outputs"].keys() == {"class", "score"}, ok.body


def test_converter_records_the_image_input_of_a_two_input_model(models: Models) -> None:
    m = read_bundle(models.two_in_bundle).manifest
    assert m.preprocessing.image_input == "image" and m.image_input is not None
    assert m.image_input.name == "image" and m.preprocessing.resize == (8, 8)
    assert m.preprocessing.color == "grayscale"
    twins = read_bundle(models.twins).manifest
    assert twins.preprocessing.image_input == "" and twins.image_input is None
    named = read_bundle(models.twins_named).manifest
    assert named.image_input is not None and named.image_input.name == "right"


def test_b64_image_feeds_the_image_input_and_equals_its_pixels_as_numbers(
        models: Models, client: Client) -> None:
    meta = models.two_in.held["meta"][:3]
    imgs = [_pixels(i) for i in range(3)]
    rows = [{"image": _b64(_png(p)), "meta": v.tolist()} for p, v in zip(imgs, meta,
                                                                         strict=True)]
    got = client.post("/v1/models/twoin:predict", {"instances": rows})
    assert got.status == 200, got.body
    nums = [{"image": (p[..., None] / 255.0).tolist(), "meta": v.tolist()}
            for p, v in zip(imgs, meta, strict=True)]
    want = client.post("/v1/models/twoin:predict", {"instances": nums})
    assert want.status == 200, want.body
    assert got.json() == want.json()  # the same model inputs, to the bit


def test_classify_examples_take_the_image_and_the_vector_by_input_name(
        models: Models, client: Client) -> None:
    meta = models.two_in.held["meta"][:2]
    examples = [{"image": _b64(_png(_pixels(i))), "meta": v.tolist()}
                for i, v in enumerate(meta)]
    r = client.post("/v1/models/twoin:classify?k=3", {"examples": examples})
    assert r.status == 200, r.body
    nums = {"image": [(_pixels(i)[..., None] / 255.0).tolist() for i in range(2)],
            "meta": meta.tolist()}
    p = client.post("/v1/models/twoin:predict", {"inputs": nums}).json()["outputs"]["class"]
    for row, probs in zip(r.json()["results"], p, strict=True):
        assert row[0][0] == str(int(np.argmax(probs)))
        assert row[0][1] == pytest.approx(max(probs), abs=1e-6)


def test_image_alone_to_a_model_that_needs_more_inputs_is_a_400(
        models: Models, client: Client) -> None:
    r = client.post("/v1/models/twoin:classify", body=_png(_pixels(0)),
                    content_type="image/png")
    assert r.status == 400, r.body
    err = r.json()["error"]
    assert "takes 2 inputs" in err and "'image'" in err and "meta" in err, err
    _still_serves(client, models)


def test_image_sent_to_the_vector_input_is_a_400(models: Models, client: Client) -> None:
    held = models.two_in.held
    r = client.post("/v1/models/twoin:predict", {"instances": [
        {"image": held["image"][0].tolist(), "meta": _b64(_png(_pixels(0)))}]})
    assert r.status == 400, r.body
    assert "twoin's image input is 'image'" in r.json()["error"], r.body
    _still_serves(client, models)


def test_several_image_inputs_and_no_name_is_a_400_naming_them(
        models: Models, client: Client) -> None:
    png = _png(_pixels(1))
    r = client.post("/v1/models/twins:predict", {"instances": [
        {"left": _b64(png), "right": _b64(png)}]})
    assert r.status == 400, r.body
    assert "several image inputs" in r.json()["error"], r.body
    raw = client.post("/v1/models/twins:classify", body=png, content_type="image/png")
    assert raw.status == 400, raw.body
    err = raw.json()["error"]
    assert "several image inputs" in err and "'left'" in err and "'right'" in err, err
    assert "image_input" in err
    x = np.full((1, 8, 8, 1), 0.5, np.float32)
    ok = client.post("/v1/models/twins:predict", {"inputs": {"left": x.tolist(),
                                                             "right": x.tolist()}})
    assert ok.status == 200, ok.body


def test_the_named_image_input_takes_images_the_other_does_not(
        models: Models, client: Client) -> None:
    png = _png(_pixels(2))
    x = np.full((8, 8, 1), 0.25, np.float32).tolist()
    ok = client.post("/v1/models/twins-named:predict", {"instances": [
        {"left": x, "right": _b64(png)}]})
    assert ok.status == 200, ok.body
    bad = client.post("/v1/models/twins-named:predict", {"instances": [
        {"left": _b64(png), "right": x}]})
    assert bad.status == 400, bad.body
    assert "image input is 'right'" in bad.json()["error"], bad.body


def test_manifest_image_input_must_name_an_image_input(models: Models) -> None:
    doc = json.loads((models.two_in_bundle / "manifest.json").read_text())
    for bad in ("meta", "nope"):
        doc["preprocessing"]["image_input"] = bad
        with pytest.raises(ManifestError, match=r"preprocessing\.image_input") as e:
            parse_manifest(doc, "twoin")
        assert "'image'" in str(e.value)


def test_convert_image_input_naming_a_vector_input_is_one_line_exit_2(
        models: Models, tmp_path: Path) -> None:
    r = convert_cli("convert", models.two_in.keras, "--representative", models.two_in.calib,
                    "--profile", "generic-x86_64", "--image-input", "meta", "-o",
                    tmp_path / "x")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--image-input 'meta'" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


