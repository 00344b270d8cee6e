"""The classic-IR switch: set before paddle is imported, loud when PIR shows up."""
import os
import subprocess
import sys

import paddle
import pytest

import slim
from slim.paddle_env import PirModeError, assert_classic_program, paddle_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "FLAGS_enable_pir_api"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_importing_slim_selects_classic_ir_and_builds_programdesc_programs():
    result = _run("import slim, paddle, os\n"
                  "paddle.enable_static()\n"
                  "main = paddle.static.Program()\n"
                  "with paddle.static.program_guard(main, paddle.static.Program()):\n"
                  "    x = paddle.static.data('x', [-1, 3, 8, 8], 'float32')\n"
                  "    paddle.static.nn.conv2d(x, 4, 3, bias_attr=False)\n"
                  "from slim.paddle_env import assert_classic_program\n"
                  "assert_classic_program(main)\n"
                  "print(os.environ['FLAGS_enable_pir_api'], len(main.global_block().ops))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1"]


def test_pir_flag_set_by_the_user_is_refused_loudly():
    result = _run("import slim", FLAGS_enable_pir_api="1")
    assert result.returncode != 0
    assert "PirModeError" in result.stderr and "FLAGS_enable_pir_api" in result.stderr


@pytest.mark.skipif(paddle_version() < (3, 0), reason="Paddle 2.x has no PIR default")
def test_paddle_imported_before_slim_in_pir_mode_is_refused():
    result = _run("import paddle\nimport slim")
    assert result.returncode != 0
    assert "import slim first" in result.stderr


def test_assert_classic_program_accepts_classic_and_refuses_other_objects():
    program = paddle.static.Program()
    assert assert_classic_program(program) is program
    with pytest.raises(PirModeError):
        assert_classic_program(object())


@pytest.mark.skipif(paddle_version() < (3, 0), reason="Paddle 2.x has no PIR programs")
def test_assert_classic_program_refuses_a_pir_program():
    with pytest.raises(PirModeError, match="PIR"):
        assert_classic_program(paddle.pir.Program())


def test_slim_exposes_a_version():
    assert slim.__version__
