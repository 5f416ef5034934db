"""The HTTP routes of `ringsp serve` (FastAPI), in OpenAI's shapes:

    POST /v1/images/generations   text-to-image models: {"created", "data": [{"b64_json", "seed", "timings"}]}
    POST /v1/images/edits         edit models, the input image in the body as base64
    POST /v1/videos               video models: a job object {"id", "status", "progress", ...} at once
    GET  /v1/videos/{id}          the job object; "timings" once completed (?wait=S: once finished, or S s)
    GET  /v1/videos/{id}/content  the mp4 of a completed job
    DELETE /v1/videos/{id}        forgets a finished job and removes its file
    GET  /v1/models, GET /health

Errors are {"error": {"message", "type", "param", "code"}}: 400 for a bad body (param names
the field), 401 without the --api-key, 404 for an unknown video, 409 for one not completed,
413 for a body over MAX_BODY_BYTES, 429 when the queue is full, 500 when the generation
failed (its error), 503 while the workers load, after they went down (which rank, why) and
while the server stops.
"""
import asyncio
import base64
import contextlib
import hmac
import os
import time
import uuid

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from .bodies import ImageEdit, ImageGeneration, VideoCreate
from .jobs import Job, QueueFull, Unavailable, unavailable_reason
from .body_checks import BadRequest, check, check_endpoint, store_image

# A body larger than this (by its Content-Length) is refused: an input image of a few MB fits.
MAX_BODY_BYTES = 64 << 20
# GET /v1/videos/{id}?wait=S holds the answer until the job finishes, at most this long.
MAX_WAIT_S = 60.0


class _Fail(Exception):
    def __init__(self, status, message, kind, param=None, code=None, headers=None):
        super().__init__(message)
        self.status, self.kind, self.param, self.code, self.headers = status, kind, param, code, headers


def _error(status, message, kind, param=None, code=None, headers=None):
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(config, pool, dispatcher):
    app = FastAPI(title="ringsp serve", docs_url=None, redoc_url=None, openapi_url=None)
    videos = {}
    started = int(time.time())
    inputs = os.path.join(config.output_dir, "inputs")
    os.makedirs(inputs, exist_ok=True)

    @app.exception_handler(_Fail)
    async def _on_fail(request, exc):
        return _error(exc.status, str(exc), exc.kind, exc.param, exc.code, exc.headers)

    @app.exception_handler(BadRequest)
    async def _on_bad(request, exc):
        return _error(400, str(exc), "invalid_request_error", exc.param)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request, exc):
        return _invalid(exc.errors())

    @app.middleware("http")
    async def _limit_body(request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
            return _error(413, f"the body is {size} bytes; at most {MAX_BODY_BYTES} are taken",
                          "invalid_request_error")
        return await call_next(request)

    async def authorised(request: Request):
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise _Fail(401, "a valid API key is needed: send the header 'Authorization: Bearer KEY'",
                        "invalid_request_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorised)]

    @app.get("/health")
    async def health():
        if pool.state == "ready" and not dispatcher.closed:
            running = dispatcher.running
            return {"status": "ok", "model": config.model_id, "queued": dispatcher.queued(),
                    "running": running.id if running is not None else None,
                    "workers": [{"rank": r, "pid": pid} for r, pid in enumerate(pool.pids())]}
        status = {"starting": "loading", "down": "unavailable"}.get(pool.state, "stopping")
        reason = dispatcher.closed or unavailable_reason(pool)
        return JSONResponse({"status": status, "error": {"message": reason}}, status_code=503)

    @app.get("/v1/models", dependencies=guarded)
    async def models():
        info, base = config.info, config.base
        defaults = {"size": f"{base.width}x{base.height}", "num_inference_steps": base.steps,
                    "guidance_scale": base.guidance_scale, "num_frames": base.num_frames}
        return {"object": "list", "data": [{
            "id": config.model_id, "object": "model", "created": started, "owned_by": "ringsp",
            "media": "image" if info.makes_images else "video", "edit": info.edit, "defaults": defaults,
            "parallel": {"num_gpus": base.num_gpus, "ulysses_degree": base.ulysses_degree,
                         "ring_degree": base.ring_degree, "cfg_degree": base.cfg_degree, "device": base.device}}]}

    @app.post("/v1/images/generations", dependencies=guarded)
    async def images(body: ImageGeneration):
        return await _images(body, "image")

    @app.post("/v1/images/edits", dependencies=guarded)
    async def edits(body: ImageEdit):
        return await _images(body, "edit")

    async def _images(body, kind):
        image_path = None
        try:
            check_endpoint(config.info, kind)
            if kind == "edit":
                image_path = store_image(body.image, inputs, f"{uuid.uuid4().hex}.input")
            job = _submit(kind, body, image_path, "img")
            await _finished(job)
        finally:
            if image_path is not None:
                _remove(image_path)
        try:
            _raise_if_failed(job)
            data = [{"b64_json": _b64(path), "seed": request.seed, "timings": job.timings(i)}
                    for i, (path, request) in enumerate(zip(job.outputs, job.requests))]
        finally:
            for path in job.outputs:
                _remove(path)
        return {"created": int(job.created_at), "model": config.model_id, "data": data}

    @app.post("/v1/videos", dependencies=guarded)
    async def create_video(body: VideoCreate):
        job = _submit("video", body, None, "video")
        videos[job.id] = job
        return _video(job)

    @app.get("/v1/videos/{video_id}", dependencies=guarded)
    async def get_video(video_id: str, wait: float = 0.0):
        job = _find(video_id)
        if not 0 <= wait <= MAX_WAIT_S:
            raise BadRequest(f"wait must be 0..{MAX_WAIT_S:g} seconds, got {wait:g}", "wait")
        if wait and not job.finished:  # an extension: answers as soon as the job ends (no polling)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_finished(job), wait)
        return _video(job)

    @app.get("/v1/videos/{video_id}/content", dependencies=guarded)
    async def video_content(video_id: str):
        job = _find(video_id)
        if job.status != "completed":
            raise _Fail(409, f"video {job.id} is {job.status}" + (f": {job.error}" if job.error else ""),
                        "invalid_request_error", code="video_not_ready")
        return FileResponse(job.outputs[0], media_type="video/mp4", filename=f"{job.id}.mp4")

    @app.delete("/v1/videos/{video_id}", dependencies=guarded)
    async def delete_video(video_id: str):
        job = _find(video_id)
        if not job.finished:
            raise _Fail(409, f"video {job.id} is {job.status}: it can be deleted once it has finished",
                        "invalid_request_error", code="video_not_finished")
        del videos[job.id]
        for path in job.outputs:
            _remove(path)
        return {"id": job.id, "object": "video.deleted", "deleted": True}

    def _submit(kind, body, image_path, prefix):
        checked = check(config, body, kind, pool.tokenizer, image_path)
        job = Job("video" if kind == "video" else "image", checked, config.output_dir, prefix)
        try:
            dispatcher.submit(job)
        except QueueFull as exc:
            raise _Fail(429, str(exc), "rate_limit_error", code="queue_full") from None
        except Unavailable as exc:
            raise _Fail(503, str(exc), "server_error", code="unavailable") from None
        return job

    def _find(video_id):
        job = videos.get(video_id)  # only a lookup: the id never becomes a path
        if job is None:
            raise _Fail(404, f"no video {video_id!r}", "invalid_request_error", "video_id", "video_not_found")
        return job

    def _video(job):
        failed = job.status == "failed"
        return {"id": job.id, "object": "video", "model": config.model_id, "status": job.status,
                "progress": job.progress, "created_at": int(job.created_at),
                "completed_at": int(job.finished_at) if job.status == "completed" else None,
                "size": job.size, "seconds": f"{job.num_frames / job.fps:g}", "num_frames": job.num_frames,
                "seed": job.seed,
                "error": {"code": "unavailable" if job.unavailable else "generation_failed", "message": job.error}
                if failed else None,
                "timings": job.timings() if job.status == "completed" else None}

    return app


def _invalid(errors):
    """400 for what the body parser refused: the first problem, with its field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid body", "type": ""}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        message = f"unknown field {param!r}"
    elif first.get("type") == "json_invalid":
        message, param = f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})", None
    elif first.get("type") == "missing":
        message = f"{param} is required"
    else:
        message = f"{param}: {first['msg']}" if param else first["msg"]
    return _error(400, message, "invalid_request_error", param)


async def _finished(job):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    job.on_finished(lambda _: loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None)))
    await done


def _raise_if_failed(job):
    if job.status == "failed":
        if job.unavailable:
            raise _Fail(503, job.error, "server_error", code="unavailable")
        raise _Fail(500, f"the generation failed: {job.error}", "server_error", code="generation_failed")


def _b64(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
