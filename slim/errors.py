"""User-facing errors: one line, exit code 2, no traceback.

`exit_on_user_error` wraps every CLI main(). Besides our own `UserError`s it turns
the errors that come from the user's environment rather than from a bug here into
the same one line: an OSError (a full disk, a read-only or vanished directory, a
permission), a PyYAML error, input nested too deeply for Python's recursion limit.
Ctrl-C ends with one line and exit code 130 (`Interrupted` lets a long job name its
last complete checkpoint in that line).
"""
import argparse
import errno
import functools
import reprlib
import signal
import sys
import threading

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C
ECHO_LIMIT = 200  # characters of a user's value echoed in an error message
MESSAGE_LIMIT = 2000  # characters of one error line at the most


class UserError(Exception):
    """Bad input from the user (a file, a key, a value). The message is one line that names
    what is wrong and what would be valid; CLIs print it and exit 2."""


class ConfigError(UserError):
    """A config file or `-o` override is invalid."""


class DataError(UserError):
    """A dataset directory, list file or annotation file is unusable."""


class Interrupted(Exception):
    """The user stopped a job (Ctrl-C); the message says what was kept (the last complete
    checkpoint). CLIs print it and exit 130."""


class _BoundedRepr(reprlib.Repr):
    """repr() that does bounded work: a few levels and items of a container, long strings and
    numbers cut (a user's value may be a huge or deeply nested structure)."""

    def __init__(self, limit):
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxset = self.maxfrozenset = 12
        self.maxdeque = self.maxdict = 12
        self.maxstring = self.maxlong = self.maxother = limit

    def repr_str(self, value, level):
        return super().repr_str(value[:4 * self.maxstring], level)

    def repr_int(self, value, level):
        if value.bit_length() > 4 * self.maxlong * 4:  # far past what would be shown
            return f"<int of about {int(value.bit_length() * 0.30103)} digits>"
        return super().repr_int(value, level)


def bounded_repr(value, limit=ECHO_LIMIT):
    """repr(value) built with bounded work and about `limit` characters per scalar (containers
    show their first items); safe for huge, deeply nested or self-referencing values."""
    try:
        return _BoundedRepr(limit).repr(value)
    except (ValueError, RecursionError):  # e.g. an object whose own repr fails this way
        return f"<{type(value).__name__}>"


def shorten(value, limit=ECHO_LIMIT):
    """`value` as text fit to echo in a one-line message: a string as it is, anything else as
    its (bounded) repr; control characters escaped and cut to about `limit` characters (a
    user's value may be huge or hostile)."""
    text = value if isinstance(value, str) else bounded_repr(value, limit)
    if len(text) > 4 * limit:
        text = text[:4 * limit]
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)}+ characters)"


def shorten_repr(value, limit=ECHO_LIMIT):
    """Like `shorten`, but a string is quoted as repr() quotes it ('abc'): for messages that
    must tell the string '5' from the number 5."""
    return shorten(bounded_repr(value, limit) if isinstance(value, str) else value, limit)


def close_matches(word, candidates, n=1):
    """The closest candidate spellings of `word` (for 'did you mean' hints)."""
    import difflib
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.6)


def did_you_mean(word, candidates):
    """' (did you mean 'X'?)' when a candidate is close to `word`, else ''."""
    match = close_matches(word, candidates)
    return f" (did you mean '{match[0]}'?)" if match else ""


def describe_os_error(error):
    """'No space left on device: /path' for an OSError (strerror and the file it names)."""
    reason = error.strerror or errno.errorcode.get(error.errno or 0) or str(error)
    name = error.filename if error.filename is not None else None
    return f"{reason}: '{shorten(str(name))}'" if name else reason


def one_line(message):
    """`message` on one line, at most MESSAGE_LIMIT characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + " ..."


def _environment_error_message(error):
    """The one-line message for an error the environment or the input caused, or None for
    anything else (a bug, which keeps its traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError):
        return describe_os_error(error)
    if isinstance(error, RecursionError):
        return "the input is nested too deeply to read (brackets or indentation hundreds of levels deep)"
    if type(error).__module__.split(".")[0] == "yaml":
        return f"YAML: {shorten(str(error), 400)}"
    return None


def _interrupt(signal_number, frame):
    raise KeyboardInterrupt


def stop_on_sigterm():
    """Make SIGTERM (`kill`, a job scheduler's stop) stop the run like Ctrl-C: the same clean-up
    (a checkpoint being written is discarded), one line, exit 130. Call it again after
    `import paddle`, whose import installs a C++ handler that prints a crash report instead.
    Main thread only (elsewhere Python refuses signal handlers; nothing is changed)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (a value of the wrong type, an unknown or missing
    option) are one line, `error: <what argparse says> (<prog> --help lists the options)`,
    exit 2, like every other user error, instead of its usage block. Sub-parsers made with
    `add_subparsers` are of this class too."""

    def error(self, message):
        print(f"error: {one_line(message)} (`{self.prog} --help` lists the options)",
              file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)


def exit_on_user_error(main):
    """Decorate a CLI main(): a user or environment error becomes `error: <message>` on
    stderr and exit 2; Ctrl-C (and SIGTERM, see `stop_on_sigterm`) becomes one line and
    exit 130."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            stop_on_sigterm()
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        except Interrupted as interruption:
            print(f"interrupted: {one_line(interruption)}", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
        except Exception as error:  # noqa: BLE001 - re-raised below unless it is the user's
            message = _environment_error_message(error)
            if message is None:
                raise
            print(f"error: {one_line(message)}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT_CODE)
    return wrapper
