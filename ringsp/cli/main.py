"""`ringsp` console script: `ringsp generate [options]` (the command word may be left out).

    ringsp generate                               # built-in tiny model, 2 CPU processes, checked
    ringsp generate --model-path DIR --num-gpus 4 --ulysses-degree 2 --ring-degree 2
    ringsp generate --model-path QWEN_EDIT_DIR --image in.png --prompt "make it blue" --num-gpus 2
    torchrun --nproc-per-node 4 -m ringsp generate --model-path DIR --ring-degree 4
    ringsp serve --model-path DIR --num-gpus 4 --port 8000   # HTTP server: ringsp.serve
"""
import importlib.util
import sys

from ringsp.models.pipelines import ModelDirError

from .args import PROG, UsageError, build_parser, describe_request, parse_request, usage_exit
from .supervise import LauncherStopped, WorkerFailure

COMMANDS = ("generate", "serve")


def main(argv=None):
    """Entry point; returns the exit code (usage errors raise SystemExit(2) after one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        print("usage: ringsp generate [options]   (ringsp generate --help lists them)\n"
              "       ringsp serve [options]      (ringsp serve --help lists them)")
        return 0
    command = "generate"
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    elif argv and not argv[0].startswith("-"):
        usage_exit(f"unknown command {argv[0]!r}; the commands are 'generate' and 'serve'")
    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing and not {"-h", "--help"} & set(argv):
        print(f"{PROG}: error: needs {' and '.join(missing)} (install ringsp with its 'models' extra)",
              file=sys.stderr)
        return 1
    if command == "serve":
        return _serve(argv)
    try:
        request = parse_request(argv)
    except UsageError as exc:
        usage_exit(str(exc))
    from . import launch
    from .worker import quiet_libraries

    quiet_libraries()
    if request.demo:
        print(f"No model or run arguments given: running the built-in demo, i.e. `{describe_request(request)}` "
              f"(see `{PROG} --help`)")
    try:
        return launch.execute(request)
    except ModelDirError as exc:  # weights that only loading finds broken (one-process runs)
        usage_exit(str(exc))
    except WorkerFailure as exc:  # spawned ranks: the others are already stopped
        if exc.traceback:
            print(f"Traceback of rank {exc.failures[0].rank}:\n{exc.traceback.rstrip()}", file=sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except LauncherStopped as exc:  # a job scheduler's SIGTERM: every rank was stopped first
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C: spawned ranks were stopped on the way out
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _serve(argv):
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"ringsp serve: error: needs {' and '.join(missing)} (install ringsp with its 'serve' extra)",
              file=sys.stderr)
        return 1
    from ringsp.serve.main import main as serve_main

    return serve_main(argv)


__all__ = ["main", "build_parser"]

if __name__ == "__main__":
    sys.exit(main())
