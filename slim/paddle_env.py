"""The one place that decides which Paddle IR this project runs on.

Paddle 3.x builds static programs in the new IR (PIR) by default, where the
classic static API we use (conv2d, batch_norm, yolo ops, ProgramDesc
serialization) asserts. `FLAGS_enable_pir_api=0` must be in the environment
before `import paddle`, so `slim/__init__.py` calls `select_classic_ir()`
first thing and every entry point imports `slim` before paddle.
"""
import os
import sys
import warnings

PIR_FLAG = "FLAGS_enable_pir_api"


class PirModeError(RuntimeError):
    """Paddle is (or would be) building PIR programs, which this project cannot prune."""


def select_classic_ir():
    """Force classic static IR; fail loudly if paddle was imported too early in PIR mode."""
    if os.environ.get(PIR_FLAG, "0").lower() in ("1", "true"):
        raise PirModeError(
            f"{PIR_FLAG}={os.environ[PIR_FLAG]} is set; slim needs the classic static IR "
            f"(unset it or set {PIR_FLAG}=0)")
    os.environ[PIR_FLAG] = "0"
    # Paddle's C++ INFO lines ("New Executor is Running.") would interleave with our reports.
    os.environ.setdefault("GLOG_minloglevel", "1")
    # Paddle 3 warns about a missing ccache at import; users would see it above every error.
    warnings.filterwarnings("ignore", message="No ccache found")
    if "paddle" in sys.modules:
        _check_paddle_not_in_pir_mode()


def _check_paddle_not_in_pir_mode():
    import paddle
    in_pir = getattr(paddle.framework, "in_pir_mode", None)
    use_pir = getattr(paddle.framework, "use_pir_api", None)
    if (use_pir is not None and use_pir()) or (in_pir is not None and in_pir()):
        raise PirModeError(
            "paddle was imported before slim with the new IR (PIR) enabled; "
            f"import slim first or set {PIR_FLAG}=0 before importing paddle")


def assert_classic_program(program):
    """Raise PirModeError unless `program` is a classic `paddle.static.Program` (ProgramDesc)."""
    import paddle
    pir = getattr(paddle, "pir", None)
    if pir is not None and isinstance(program, getattr(pir, "Program", ())):
        raise PirModeError(
            "got a PIR program; slim works on classic ProgramDesc programs only "
            f"(set {PIR_FLAG}=0 before importing paddle)")
    if not isinstance(program, paddle.static.Program) or not hasattr(program, "desc"):
        raise PirModeError(f"expected a classic paddle.static.Program, got {type(program).__name__}")
    return program


def paddle_version():
    """(major, minor) of the installed paddle."""
    import paddle
    major, minor = paddle.__version__.split(".")[:2]
    return int(major), int(minor)
