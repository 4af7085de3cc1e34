"""`sliceserve serve | simulate | bench | profile | generate`.

Each subcommand lives in its own module exposing `add_parser(subparsers)` and `run(args) -> int`; they
are imported lazily so `simulate` never pays for torch. User errors (ValueError, FileNotFoundError)
become one line on stderr and exit code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "serve": "Start the OpenAI-compatible server",
    "simulate": "Run policies on the simulator (virtual time)",
    "bench": "Run a workload against the local engine or a server URL",
    "profile": "Measure this device and fit a latency model",
    "generate": "Generate text for a prompt with the local engine",
}


def _module(name: str):
    return importlib.import_module(f"sliceserve.cli.{name}_cmd")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sliceserve", description="SLO-driven LLM serving for edge devices")
    from sliceserve import __version__

    parser.add_argument("--version", action="version", version=f"sliceserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported (the others may need torch or FastAPI).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if name == chosen:
            _module(name).add_parser(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_module(args.command).run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"sliceserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
