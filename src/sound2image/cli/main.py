"""Root of the ``sound2image`` command: registers the command groups and holds the one error boundary.

Each command group lives in its own module with a ``register(subparsers)`` function; a command
sets ``func`` to a handler ``(args) -> int``. Heavy imports (torch, diffusers) stay inside the
handlers so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence

from sound2image import __version__
from sound2image.errors import Sound2ImageError

# Module names under sound2image.cli, in the order their groups appear in --help.
COMMAND_GROUPS = ("audio", "data", "embed", "generate", "train", "evaluate", "serve")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2

#: Library parameters that a command's option sets under another name: parameter -> that option's dest
#: (``generate --imagebind-weights`` is ``from_pretrained(audio_encoder_weights=...)``, ``train soundiff
#: --model`` is the base pipeline's ``model``). Used only where the command has no option of the
#: parameter's own name.
PARAMETER_DESTS = {
    "audio_encoder_weights": "imagebind_weights",
    "model": "base_model",
    "local_files_only": "offline",
}


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors, which matches our convention; keep its message short."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sound2image",
        description="Turn sounds into pictures.",
        epilog="Examples:\n  sound2image audio info examples/waves.flac\n  sound2image data check ./ADVANCE\n"
        "  sound2image generate examples/waves.flac --out images/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sound2image {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_GROUPS:
        module = importlib.import_module(f"sound2image.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return EXIT_BAD_INPUT if args.command is None and argv else EXIT_OK
    try:
        code = int(handler(args) or EXIT_OK)
        sys.stdout.flush()  # a closed pipe shows up here, inside the boundary, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`sound2image data check … | head`): stop quietly, the way Python's
        # documentation recommends ("Note on SIGPIPE"): point stdout at devnull so that the final
        # flush at exit cannot fail again, and exit 1.
        _silence_stdout()
        return EXIT_FAILURE
    except Sound2ImageError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {flag_names(str(error), error.parameters, parser, args)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one boundary that turns bugs into one line
        if args.debug:
            traceback.print_exc()
        print(f"error: {type(error).__name__}: {error} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def flag_names(
    message: str, parameters: Sequence[str], parser: argparse.ArgumentParser, args: argparse.Namespace
) -> str:
    """A library message with each parameter it names written as the flag of the command that ran.

    ``batch_size must be >= 1`` -> ``--batch-size must be >= 1``; a switch's ``overwrite=True`` (or
    ``overwrite``) -> ``--overwrite``. A parameter the command has no option for stays as it is.
    """
    options = _options(_invoked_parser(parser, args))
    for parameter in parameters:
        action = options.get(parameter) or options.get(PARAMETER_DESTS.get(parameter, ""))
        if action is None:
            continue
        flag = max(action.option_strings, key=len)  # the long spelling
        switch = action.nargs == 0 and action.const is True  # store_true
        name = re.escape(parameter) + ("(?:=True)?" if switch else "")
        message = re.sub(rf"(?<![\w/.-]){name}(?![\w/])", flag, message)  # not inside a word or path
    return message


def _invoked_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that parsed ``args``, following the chosen name at each subcommand level."""
    while True:
        chooser = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, chooser.dest, None) if chooser is not None else None
        if chooser is None or name not in chooser.choices:
            return parser
        parser = chooser.choices[name]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """dest -> the optional argument that sets it."""
    return {action.dest: action for action in parser._actions if action.option_strings}


def _silence_stdout() -> None:
    """Point file descriptor 1 at the null device (stdout's buffered text is dropped with it)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no real stdout (closed, replaced)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
