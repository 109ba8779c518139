"""User-facing errors: one clear line, no traceback."""

import functools
import sys


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a data set), reported as one line."""


def cli_main(main):
    """Wrap a CLI entry point: a UserError prints one line to stderr and exits with status 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
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
