"""`ringsp serve` for a video model over real HTTP: the built-in tiny Wan on 2 gloo processes
(ring), one server for the whole module, an --api-key: jobs that return decodable mp4s with
the stage table, 400s naming the field, 401 without the key, one request at a time in the
order they came, 429 when the queue is full, and SIGTERM ending every process (last)."""
import concurrent.futures

import imageio.v2 as imageio
import pytest

from ringsp.cli.timing import STAGES

from .server import Server, alive, wait_for_video

KEY = "test-key-123"
FAST = {"prompt": "a boat", "num_frames": 1, "num_inference_steps": 1, "seed": 1}


@pytest.fixture(scope="module")
def server():
    srv = Server("--model", "tiny-wan", "--device", "cpu", "--num-gpus", "2", "--ring-degree", "2",
                 "--vae-min-parallel-pixels", "0", "--steps", "2", "--max-queue", "3", "--warmup-steps", "1",
                 api_key=KEY)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def test_health_and_models(server, client):
    with server.client(key=False) as anonymous:
        health = anonymous.get("/health")  # no key needed
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert [w["rank"] for w in health.json()["workers"]] == [0, 1]
    model = client.get("/v1/models").json()["data"][0]
    assert model["id"] == "tiny-wan" and model["media"] == "video"
    assert model["defaults"] == {"size": "80x48", "num_inference_steps": 2, "guidance_scale": 5.0, "num_frames": 9}
    assert model["parallel"]["ring_degree"] == 2


def test_a_video_job_gives_a_decodable_mp4_and_its_stage_table(client, tmp_path):
    created = client.post("/v1/videos", json={"prompt": "a cat playing piano", "seconds": "0.5", "seed": 4})
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["object"] == "video" and job["status"] in ("queued", "in_progress") and job["timings"] is None
    assert (job["size"], job["num_frames"], job["seed"]) == ("80x48", 9, 4)  # 0.5 s at 16 fps -> 4k+1 = 9
    job, seen = wait_for_video(client, job["id"])
    assert job["status"] == "completed" and job["progress"] == 100, job
    assert all(p <= 99 for status, p in seen if status != "completed")
    timings = job["timings"]
    assert list(timings["stages_s"]) == list(STAGES)
    assert len(timings["denoise_step_s"]) == 2 and timings["denoise"]["steps"] == 2
    assert abs(timings["total_s"] - sum(timings["stages_s"].values())) < 1e-9
    assert timings["queued_s"] >= 0 and timings["started_at"] <= timings["finished_at"]
    content = client.get(f"/v1/videos/{job['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    path = tmp_path / "v.mp4"
    path.write_bytes(content.content)
    frames = imageio.mimread(str(path))
    assert len(frames) == 9 and frames[0].shape == (48, 80, 3)
    assert client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    assert client.get(f"/v1/videos/{job['id']}").status_code == 404


@pytest.mark.parametrize("body, param, text", [
    ({"prompt": "x", "size": "80x50"}, "size", "size (height) 50: tiny-wan needs a positive multiple of 16"),
    ({"prompt": "x", "size": "big"}, "size", "'WIDTHxHEIGHT'"),
    ({"prompt": "x", "num_frames": 8}, "num_frames", "num_frames 8: tiny-wan needs 4k+1 frames"),
    ({"prompt": "x", "seconds": "0", }, "seconds", "seconds must be > 0"),
    ({"prompt": "x", "seconds": 1, "num_frames": 5}, "seconds", "not both"),
    ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "num_inference_steps must be >= 1"),
    ({"prompt": "x", "guidance_scale": -1.0}, "guidance_scale", "guidance_scale must be >= 0"),
    ({"prompt": "x", "seed": -1}, "seed", "seed must be from 0 to 2**64 - 1"),
    ({"prompt": "word " * 40}, "prompt", "tokens long; tiny-wan takes at most 32"),
    ({"prompt": "x", "negative_prompt": "fog " * 40}, "negative_prompt", "takes at most 32"),
    ({"prompt": 3}, "prompt", "valid string"),
    ({"prompt": "x", "seed": "3"}, "seed", "valid integer"),
    ({"prompt": "x", "num_inference_steps": True}, "num_inference_steps", "valid integer"),
    ({"prompt": "x", "fps": 24}, "fps", "unknown field 'fps'"),
    ({}, "prompt", "prompt is required"),
    ({"prompt": "x", "model": "sora-2"}, "model", "is not served here"),
])
def test_bad_requests_get_400_naming_the_field(client, body, param, text):
    reply = client.post("/v1/videos", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and text in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_not_json_and_wrong_endpoint_get_400(client):
    reply = client.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]["message"]
    reply = client.post("/v1/images/generations", json={"prompt": "x"})
    assert reply.status_code == 400 and "use POST /v1/videos" in reply.json()["error"]["message"]


def test_a_missing_or_wrong_key_is_refused(server):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        with server.client(key=False) as c:
            reply = c.post("/v1/videos", json=FAST, headers=headers)
            assert reply.status_code == 401, headers
            assert reply.json()["error"]["code"] == "invalid_api_key"
            assert c.get("/v1/models", headers=headers).status_code == 401


def test_wait_answers_once_the_job_has_finished(client):
    job = client.post("/v1/videos", json=FAST).json()
    assert client.get(f"/v1/videos/{job['id']}", params={"wait": 60}).json()["status"] == "completed"
    reply = client.get(f"/v1/videos/{job['id']}", params={"wait": 61})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "wait"


def test_unknown_and_unfinished_videos(client):
    assert client.get("/v1/videos/video_0000").status_code == 404
    assert client.get("/v1/videos/../../etc/passwd/content").status_code == 404
    job = client.post("/v1/videos", json=FAST).json()
    early = client.get(f"/v1/videos/{job['id']}/content")
    if early.status_code != 200:  # it may have finished already
        assert early.status_code == 409 and early.json()["error"]["code"] == "video_not_ready"
    assert wait_for_video(client, job["id"])[0]["status"] == "completed"


def test_concurrent_requests_all_complete_one_at_a_time_in_order(client):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda s: client.post("/v1/videos", json=dict(FAST, seed=s)), range(3)))
    assert [r.status_code for r in replies] == [200] * 3, [r.text for r in replies]
    jobs = [wait_for_video(client, r.json()["id"])[0] for r in replies]
    assert [j["status"] for j in jobs] == ["completed"] * 3
    runs = sorted((j["timings"]["accepted_at"], j["timings"]["started_at"], j["timings"]["finished_at"]) for j in jobs)
    for (_, _, finished), (_, started, _) in zip(runs, runs[1:]):
        assert started >= finished  # one at a time, first come first served


def test_a_full_queue_gets_429(client):
    replies = [client.post("/v1/videos", json=dict(FAST, seed=s)) for s in range(6)]
    codes = [r.status_code for r in replies]
    assert 3 <= codes.count(200) <= 4 and codes.count(429) == 6 - codes.count(200), codes
    assert all(r.json()["error"]["code"] == "queue_full" for r in replies if r.status_code == 429)
    for r in replies:
        if r.status_code == 200:
            assert wait_for_video(client, r.json()["id"])[0]["status"] == "completed"


def test_sigterm_stops_the_server_and_every_worker(server, client):
    pids = server.descendants()
    assert len(pids) >= 2
    client.post("/v1/videos", json=FAST)  # one running or waiting while the signal comes
    assert server.terminate() == 0, "".join(server.errors)[-3000:]
    assert alive(pids) == []
    assert "ringsp serve: stopped" in "".join(server.lines)
