"""User-facing errors and warnings: one clear line each, no traceback."""

import contextlib
import errno
import functools
import sys
import warnings

# Failures of the machine rather than of the input: reported as one line (exit status 1), not a traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a data set), reported as one line."""


class MachineError(UserError):
    """The machine failed the tool (a full disk, a read-only file system): one line, exit status 1."""

    exit_status = 1


class SaveFailed(MachineError):
    """A checkpoint could not be saved; the message already says which one is kept."""


def write_error(path, err: OSError) -> UserError:
    """A failed write of `path` as one line naming `path` (a writer's OSError often names no file, or a temporary
    one): a MachineError for a full disk or another failure of the machine, a UserError otherwise."""
    kind = MachineError if err.errno in ENVIRONMENT_ERRNOS else UserError
    return kind(f"{path}: cannot write ({err.strerror or err})")


@contextlib.contextmanager
def writing(path):
    """Any OSError in the block becomes `write_error(path, ...)`."""
    try:
        yield
    except OSError as err:
        raise write_error(path, err) from None


def _one_line(message, category, filename, lineno, line=None) -> str:
    text = " ".join(str(message).split("\n"))
    if issubclass(category, UserWarning) and category.__module__.startswith(("builtins", __package__)):
        return f"warning: {text}\n"
    return f"warning: {text} ({category.__name__}, {filename}:{lineno})\n"


@contextlib.contextmanager
def one_line_warnings():
    """Warnings shown as `warning: <message>`, one line each (not Python's two-line form naming the source line),
    every time they happen. Where warnings are recorded instead (pytest), they stay recorded."""
    previous = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.formatwarning = _one_line
        try:
            yield
        finally:
            warnings.formatwarning = previous


def cli_main(main):
    """Wrap a CLI entry point: a UserError prints one line to stderr and exits with status 2; a full disk (or
    another failure of the machine, `ENVIRONMENT_ERRNOS`) one line and status 1. Warnings are one line each."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            with one_line_warnings():
                return main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return getattr(err, "exit_status", 2)
        except OSError as err:
            if err.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = "" if err.filename is None else f"{err.filename}: "
            print(f"error: {where}{err.strerror or err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def run_cli(build_parser, run, argv=None, compilation_cache=lambda args: True) -> int:
    """Parse `argv` with `build_parser()` and call `run(args)` with `cli_main`'s error handling.

    Every command-line tool runs JAX steps, so this is where the process is set up (`_runtime.set_up`:
    malloc settings, XLA's CPU flags, the compilation cache unless `compilation_cache(args)` is false),
    before JAX starts.
    """
    from ._runtime import set_up

    args = build_parser().parse_args(argv)
    set_up(compilation_cache=compilation_cache(args))
    return cli_main(run)(args)
