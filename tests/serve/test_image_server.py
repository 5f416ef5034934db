"""`ringsp serve` for image models over real HTTP: the built-in tiny Qwen-Image on 2 gloo
processes (Ulysses) and the tiny Qwen-Image-Edit on 2 (ring), one server each: PNGs that
decode, 400s naming the field, and (last, on the text-to-image server) a killed worker
turning the server to 503 within seconds, naming the rank, then SIGTERM leaving no process."""
import base64
import io
import time

import numpy as np
import PIL.Image
import pytest

from ringsp.cli.timing import STAGES

from .server import Server, alive

FAST = {"prompt": "a red kite", "num_inference_steps": 2, "seed": 7}


def _png(b64):
    with PIL.Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def _serving(model, *flags):
    srv = Server("--model", model, "--device", "cpu", "--num-gpus", "2", *flags)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def image_server():
    yield from _serving("tiny-qwen-image", "--ulysses-degree", "2", "--vae-min-parallel-pixels", "0")


@pytest.fixture(scope="module")
def edit_server():
    yield from _serving("tiny-qwen-image-edit", "--ring-degree", "2", "--image-area", "2304")


def test_generations_return_n_decodable_pngs_with_their_stage_tables(image_server):
    with image_server.client() as client:
        reply = client.post("/v1/images/generations", json=dict(FAST, n=2, size="80x48", response_format="b64_json"))
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert [d["seed"] for d in data] == [7, 8]
    images = [_png(d["b64_json"]) for d in data]
    assert images[0].shape == (48, 80, 3) and images[0].std() > 1
    assert not np.array_equal(images[0], images[1])  # seeds 7 and 8
    for d in data:
        assert list(d["timings"]["stages_s"]) == list(STAGES) and d["timings"]["denoise"]["steps"] == 2


@pytest.mark.parametrize("body, param, text", [
    (dict(FAST, size="80x40"), "size", "size (height) 40: tiny-qwen-image needs a positive multiple of 16"),
    (dict(FAST, n=0), "n", "n must be in 1..10"),
    (dict(FAST, response_format="url"), "response_format", "b64_json"),
    (dict(FAST, num_inference_steps=1), "num_inference_steps", "needs at least 2 steps"),
    (dict(FAST, guidance_scale="high"), "guidance_scale", "valid number"),
    (dict(FAST, image="abc"), "image", "unknown field 'image'"),
])
def test_bad_image_requests_get_400_naming_the_field(image_server, body, param, text):
    with image_server.client() as client:
        reply = client.post("/v1/images/generations", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param and text in reply.json()["error"]["message"], reply.text


def test_the_other_endpoints_point_to_the_right_one(image_server):
    with image_server.client() as client:
        video = client.post("/v1/videos", json={"prompt": "x"})
        edit = client.post("/v1/images/edits", json={"prompt": "x", "image": "abc"})
    assert video.status_code == 400 and "use POST /v1/images/generations" in video.json()["error"]["message"]
    assert edit.status_code == 400 and "takes no input image" in edit.json()["error"]["message"]


def _input_image(size=(72, 40)):
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_edits_return_a_png_of_the_resized_input_size(edit_server):
    with edit_server.client() as client:
        plain = client.post("/v1/images/edits", json=dict(FAST, image=_input_image()))
        data_url = client.post("/v1/images/edits", json=dict(FAST, image="data:image/png;base64," + _input_image()))
    assert plain.status_code == 200, plain.text
    image = _png(plain.json()["data"][0]["b64_json"])
    assert image.shape == (32, 64, 3)  # 72 x 40 resized to about 2304 pixels, sides multiples of 32
    assert np.array_equal(image, _png(data_url.json()["data"][0]["b64_json"]))
    assert plain.json()["data"][0]["timings"]["denoise"]["steps"] == 2


@pytest.mark.parametrize("image, text", [
    ("not base64!", "must be base64"),
    (base64.b64encode(b"not an image").decode(), "not a readable image"),
    ("data:image/png,abc", "must be base64"),
])
def test_bad_input_images_get_400(edit_server, image, text):
    with edit_server.client() as client:
        reply = client.post("/v1/images/edits", json=dict(FAST, image=image))
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "image", reply.text
    assert text in reply.json()["error"]["message"]
    with edit_server.client() as client:
        missing = client.post("/v1/images/edits", json=FAST)
        generations = client.post("/v1/images/generations", json=FAST)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"
    assert generations.status_code == 400 and "use POST /v1/images/edits" in generations.json()["error"]["message"]


def test_a_killed_worker_turns_the_server_to_503_naming_it(image_server):
    import os
    import signal

    with image_server.client() as client:
        workers = client.get("/health").json()["workers"]
        pids = image_server.descendants()
        os.kill(workers[1]["pid"], signal.SIGKILL)
        start, health = time.monotonic(), None
        while time.monotonic() - start < 10:
            health = client.get("/health")
            if health.status_code == 503:
                break
            time.sleep(0.1)
        assert health.status_code == 503 and time.monotonic() - start < 5, health.text
        reason = health.json()["error"]["message"]
        assert f"rank 1 (pid {workers[1]['pid']}) was killed by signal SIGKILL" in reason, reason
        reply = client.post("/v1/images/generations", json=FAST)
        assert reply.status_code == 503 and "rank 1" in reply.json()["error"]["message"], reply.text
    assert image_server.terminate() == 0, "".join(image_server.errors)[-3000:]
    assert alive(pids) == []
