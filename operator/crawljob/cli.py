"""The `crawljob` command: one entry point, a subcommand per part.

Each subcommand's module parses its own flags (and CRAWLJOB_* env vars), so `crawljob X --help`
documents exactly what X takes. Imports are lazy: the worker never loads kopf or aiohttp.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "receiver": ("crawljob.receiver.app", "serve S3 event webhooks and create CrawlJobs"),
    "operator": ("crawljob.operator.app", "reconcile CrawlJobs into Jobs and report status"),
    "worker": ("crawljob_worker.__main__", "stream one CSV object from S3 (or a file) and convert it"),
    "run": ("crawljob.local.stack", "run the whole pipeline locally and process a sample file"),
}
ALIASES = {"dev": "run"}
# The extra of the distribution each command needs (each image installs one: see the Dockerfiles).
EXTRAS = {"receiver": "operator", "operator": "operator", "worker": "worker", "run": "local"}
# The packages of that extra a command cannot run without.
NEEDS = {
    "receiver": ("aiohttp",),
    "operator": ("kopf", "aiohttp"),
    "worker": ("pandas", "pyarrow", "botocore"),
    "run": ("kmock", "moto"),
}


def usage() -> str:
    lines = ["usage: crawljob <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "`crawljob <command> --help` shows the options of a command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand's own ``main(argv)``; its return value is the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command = ALIASES.get(args[0], args[0])
    if command == "--version":
        from crawljob import __version__

        print(__version__)
        return 0
    if command not in SUBCOMMANDS:
        print(f"crawljob: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Checked before the command runs: the worker imports pandas only once it reads data, so a
    # missing extra would otherwise fail mid-run instead of at once.
    missing = [name for name in NEEDS[command] if importlib.util.find_spec(name) is None]
    try:
        if missing:
            raise ModuleNotFoundError(name=missing[0])
        module = importlib.import_module(SUBCOMMANDS[command][0])
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in {"crawljob", "crawljob_worker"}:
            raise
        print(
            f"crawljob {command}: needs the Python package {error.name!r}, not installed here: "
            f"pip install 'crawljob[{EXTRAS[command]}]' (the worker image runs `crawljob-worker`)",
            file=sys.stderr,
        )
        return 2
    entry: Callable[[list[str]], int] = module.main
    return entry(args[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
