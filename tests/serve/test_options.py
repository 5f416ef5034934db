"""`ringsp serve` arguments: generate's checks and the server's own, one line and exit code 2
before any worker starts; the no-argument server is the tiny Wan on 2 CPU processes."""
import os
import re
import socket

import pytest

from ringsp.cli.args import UsageError
from ringsp.cli.main import main
from ringsp.serve.options import parse_config

TINY = ["--model", "tiny-wan", "--device", "cpu"]


def test_no_arguments_serve_the_tiny_model_on_two_processes():
    config = parse_config([], env={})
    try:
        assert config.demo and config.model_id == "tiny-wan"
        assert (config.base.num_gpus, config.base.ring_degree, config.base.device) == (2, 2, "cpu")
        assert (config.host, config.port, config.api_key) == ("127.0.0.1", 8000, None)
        assert config.base.warmup_steps == 0 and config.warmup_steps == 2 and config.own_output_dir
    finally:
        os.rmdir(config.output_dir)


def test_the_api_key_comes_from_the_flag(tmp_path):
    assert parse_config(TINY + ["--output-dir", str(tmp_path), "--api-key", "f"], env={}).api_key == "f"
    assert parse_config(TINY + ["--output-dir", str(tmp_path)], env={}).api_key is None


@pytest.mark.parametrize("argv, env, text", [
    (["--port", "70000"], {}, "--port must be in 0..65535"),
    (["--max-queue", "-1"], {}, "--max-queue must be >= 0"),
    (["--warmup-steps", "-1"], {}, "--warmup-steps must be 0 or >= 1"),
    (["--num-frames", "8"], {}, "--num-frames 8: tiny-wan needs 4k+1 frames"),
    (["--num-gpus", "2", "--ulysses-degree", "3"], {}, "must equal the number of GPUs"),
    ([], {"RANK": "0", "WORLD_SIZE": "2"}, "without torchrun"),
])
def test_bad_arguments_are_refused_before_any_worker_starts(argv, env, text):
    with pytest.raises(UsageError, match=re.escape(text)):
        parse_config(TINY + argv, env=env)


def test_an_edit_server_warms_up_on_an_image_of_its_own(tmp_path):
    config = parse_config(["--model", "tiny-qwen-image-edit", "--device", "cpu", "--output-dir", str(tmp_path)],
                          env={})
    assert config.base.image == str(tmp_path / "warmup-input.png") and config.base.image_area == 64 * 64
    assert (config.base.width, config.base.height) == (64, 64)


def test_the_console_script_reports_a_port_in_use(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(SystemExit) as exc:
            main(["serve", *TINY, "--port", str(busy.getsockname()[1])])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("ringsp serve: error: cannot listen on 127.0.0.1:")


def test_the_listening_socket_is_tcp_so_answers_go_out_without_delay():
    from ringsp.serve.main import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        # asyncio sets TCP_NODELAY on accepted sockets only when the protocol is IPPROTO_TCP
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
