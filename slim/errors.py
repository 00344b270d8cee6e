"""User-facing errors: one line, exit code 2, no traceback."""
import functools
import sys

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """Bad input from the user (a file, a key, a value). The message is one line that names
    what is wrong and what would be valid; CLIs print it and exit 2."""


class ConfigError(UserError):
    """A config file or `-o` override is invalid."""


class DataError(UserError):
    """A dataset directory, list file or annotation file is unusable."""


def close_matches(word, candidates, n=1):
    """The closest candidate spellings of `word` (for 'did you mean' hints)."""
    import difflib
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.6)


def did_you_mean(word, candidates):
    """' (did you mean 'X'?)' when a candidate is close to `word`, else ''."""
    match = close_matches(word, candidates)
    return f" (did you mean '{match[0]}'?)" if match else ""


def exit_on_user_error(main):
    """Decorate a CLI main(): a UserError becomes `error: <message>` on stderr and exit 2."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT_CODE)
    return wrapper
