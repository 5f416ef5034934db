"""`ringsp serve`: an OpenAI-style HTTP server for images (Qwen-Image, Qwen-Image-Edit) and
videos (Wan) on sequence-parallel workers that load the model once.

Modules: options (the command's flags, checked into a ServeConfig), bodies (the JSON
bodies), body_checks (a body checked into GenerateRequests by ringsp generate's own checks),
rank (one worker process: an Engine and its request loop), workers (the driver's side of
the worker processes: start, one run at a time, health, stop), jobs (jobs, the bounded
queue and the dispatcher), app (the FastAPI routes), main (the command).
"""
