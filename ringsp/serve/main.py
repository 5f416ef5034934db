"""`ringsp serve [options]`: starts the workers, listens at once (GET /health answers 503
"loading" until the model is loaded and warmed up), serves until SIGTERM or Ctrl-C, then
fails the waiting requests, lets the running one finish (up to ringsp.serve.workers.DRAIN_S),
and stops every worker. Exit code 0 after such a stop, 1 if the workers failed to load,
2 for bad arguments."""
import contextlib
import shutil
import signal
import socket
import sys
import threading

from ringsp.cli.args import UsageError

from .options import PROG, parse_config

# How long the HTTP side waits for the requests in flight once a stop was asked for.
GRACEFUL_S = 10


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_config(argv)
    except UsageError as exc:
        _usage_exit(exc)
    try:
        try:
            sock = _listen(config.host, config.port)
        except UsageError as exc:
            _usage_exit(exc)
        return _serve(config, sock)
    finally:
        if config.own_output_dir:
            shutil.rmtree(config.output_dir, ignore_errors=True)


def _usage_exit(exc):
    print(f"{PROG}: error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


def _serve(config, sock):
    import uvicorn

    from ringsp.cli.worker import quiet_libraries

    from .app import create_app
    from .jobs import Dispatcher
    from .workers import WorkerPool, WorkersDown

    quiet_libraries()
    pool = WorkerPool(config.base, warmup_steps=config.warmup_steps)
    dispatcher = Dispatcher(pool, config.max_queue)
    server = _Server(uvicorn.Config(create_app(config, pool, dispatcher), log_level="warning",
                                    timeout_graceful_shutdown=GRACEFUL_S),
                     on_stop=lambda why: dispatcher.close(f"the server is stopping ({why})"))
    host, port = sock.getsockname()[:2]
    base = config.base
    if config.demo:
        print("No arguments given: serving the built-in tiny model (see `ringsp serve --help`)")
    print(f"{PROG}: {config.model_id} on {base.num_gpus} x {base.device} (ulysses {base.ulysses_degree} x ring "
          f"{base.ring_degree} x cfg {base.cfg_degree}) at http://{_url_host(host)}:{port}; loading", flush=True)
    outcome = {"code": 0}

    def await_ready():
        try:
            pool.wait_ready()
        except WorkersDown as exc:
            print(f"{PROG}: error: the workers failed to start: {exc}", file=sys.stderr, flush=True)
            outcome["code"] = 1
            server.should_exit = True
            return
        if pool.tokenizer is None:
            print(f"{PROG}: note: the tokenizer did not reach the server; prompt lengths are not checked")
        print(f"{PROG}: ready", flush=True)

    pool.start()
    threading.Thread(target=await_ready, name="ringsp-ready", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        dispatcher.close("the server stopped")
        pool.stop()
        dispatcher.join(5)
        sock.close()
    if outcome["code"] == 0:
        print(f"{PROG}: stopped", flush=True)
    return outcome["code"]


class _Server:
    """uvicorn's server with its signal handling replaced: SIGTERM / SIGINT first close the
    queue (on_stop), then let uvicorn shut down; the process then ends by returning from
    main() after the workers are stopped, rather than by uvicorn re-raising the signal."""

    def __new__(cls, config, on_stop):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in old.items():
                        signal.signal(sig, handler)

            def _on_signal(self, sig, frame):
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True  # a second Ctrl-C: do not wait for requests in flight
                self.should_exit = True
                on_stop(signal.Signals(sig).name)

        return Server(config)


def _listen(host, port):
    """The listening socket, bound before any worker starts (a port in use is one line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets (with proto 0 every
    # small response waited ~40 ms for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url_host(host):
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(main())
