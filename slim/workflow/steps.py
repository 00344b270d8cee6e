"""One step of a workflow: a tool's command line run as a subprocess, echoed first, its
output streamed (and tee'd to a log), a failure one UserError, Ctrl-C one Interrupted."""
import os
import signal
import subprocess
import sys
import time

from slim.errors import INTERRUPTED_EXIT_CODE, Interrupted, UserError

STEP_STOP_SECONDS = 10  # after Ctrl-C, how long a step may take to stop on its own


def run_step(title, command, log_path=None):
    """Run `command` (a list), echoing it; stream its output (and tee it to `log_path`).

    A step that fails is a UserError (exit 2; its own error line is in the output above);
    one stopped by Ctrl-C (or exiting 130) is `Interrupted` (exit 130), after the step
    has printed its last line (compress.py names its last complete checkpoint there)."""
    print(f"\n=== {title}\n$ {' '.join(quoted(part) for part in command)}", flush=True)
    started = time.perf_counter()
    log_file = open(log_path, "w") if log_path else None
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            for line in process.stdout:
                _relay(line, log_file)
            process.wait()
        except KeyboardInterrupt:
            _stop_step(process, log_file)
            raise Interrupted(f"demo step '{title}' was stopped; its last line above says "
                              "what it kept") from None
    finally:
        if log_file:
            log_file.close()
    if process.returncode == INTERRUPTED_EXIT_CODE:
        raise Interrupted(f"demo step '{title}' was stopped (exit {process.returncode}); its "
                          "last line above says what it kept")
    if process.returncode != 0:
        raise UserError(f"demo step '{title}' failed (exit {process.returncode}); see the output "
                        "above" + (f" or {log_path}" if log_path else ""))
    seconds = time.perf_counter() - started
    print(f"--- {title}: {seconds:.0f} s", flush=True)
    return seconds


def _relay(text, log_file):
    sys.stdout.write(text)
    sys.stdout.flush()
    if log_file:
        log_file.write(text)


def _stop_step(process, log_file):
    """After Ctrl-C: the step (in the same process group) got it too; let it print its
    last lines and exit, and interrupt it if it is still running after a few seconds (the
    signal went to this process alone)."""
    try:
        remaining, _ = process.communicate(timeout=STEP_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        remaining, _ = process.communicate()
    _relay(remaining or "", log_file)


def quoted(part):
    """`part` of a command line as a user would type it (quoted if it needs it)."""
    return f"'{part}'" if any(c in part for c in " []{}!*") else part


def python_command(*arguments):
    """[this Python, *arguments]: a step run by the interpreter running the workflow."""
    return [sys.executable, *arguments]
