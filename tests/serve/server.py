"""A `ringsp serve` process for the HTTP tests: started on a free port, ready when its
"ready" line comes; its worker processes found through /proc."""
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_S = 300  # two workers importing diffusers and building a tiny model on a loaded 2-core machine


class Server:
    def __init__(self, *args, api_key=None):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["OMP_NUM_THREADS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        argv = [sys.executable, "-m", "ringsp", "serve", "--port", "0", *args]
        self.api_key = api_key
        if api_key:
            argv += ["--api-key", api_key]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        self.lines, self.errors = [], []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True).start()
        self.url = self._wait_for(lambda line: "at http://" in line).split("at ")[1].split(";")[0]
        self._wait_for(lambda line: line.strip() == "ringsp serve: ready")

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line)

    def _wait_for(self, test):
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            for line in self.lines:
                if test(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"the server did not start: {''.join(self.lines)}{''.join(self.errors)[-3000:]}")

    def client(self, key=True, timeout=240):
        headers = {"Authorization": f"Bearer {self.api_key}"} if key and self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def descendants(self):
        """Pids of every process below the server (its workers and their helpers)."""
        children = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
                except (FileNotFoundError, IndexError, ProcessLookupError):
                    pass
        out, todo = [], [self.proc.pid]
        while todo:
            kids = children.get(todo.pop(), [])
            out += kids
            todo += kids
        return out

    def terminate(self, timeout=60):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def alive(pids, within=10.0):
    """The pids still running after up to `within` seconds (zombies count as gone)."""
    deadline = time.monotonic() + within
    while True:
        left = [p for p in pids if _running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for_video(client, video_id, timeout=240):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{video_id}").json()
        seen.append((job["status"], job["progress"]))
        if job["status"] in ("completed", "failed"):
            return job, seen
        time.sleep(0.05)
    raise TimeoutError(f"video {video_id} did not finish: {seen[-3:]}")
