"""Flags and environment shared by every program: CRAWLJOB_* env defaults, secrets, the API flags.

Every flag has an env var (the flag name upper-cased with a CRAWLJOB_ prefix); flags win.
Values are validated at start, so a typo fails fast with a clear message.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def env_default(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The CRAWLJOB_<NAME> env var, else *default*."""
    value = environ.get(f"CRAWLJOB_{name}")
    return value if value not in (None, "") else default


def split_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated list as a tuple of non-empty stripped items."""
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def read_secret(value: str | None, file_path: str | None) -> str | None:
    """A secret given inline or as a mounted file (the file wins; trailing newline stripped)."""
    if file_path:
        return Path(file_path).read_text(encoding="utf-8").strip()
    return value or None


def add_kube_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Flags shared by every part that talks to the Kubernetes API."""
    group = parser.add_argument_group("Kubernetes API")
    group.add_argument(
        "--kube-server",
        default=env_default(environ, "KUBE_SERVER"),
        help="API server URL, e.g. the local emulator (env CRAWLJOB_KUBE_SERVER); "
        "default: $KUBECONFIG, then in-cluster, then ~/.kube/config",
    )
    group.add_argument(
        "--kubeconfig", default=environ.get("KUBECONFIG"), help="kubeconfig file (env KUBECONFIG)"
    )
    group.add_argument(
        "--namespace",
        default=env_default(environ, "NAMESPACE"),
        help="namespace of the CrawlJobs (env CRAWLJOB_NAMESPACE); default: the connection's namespace",
    )


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse *argv* (default: sys.argv[1:])."""
    return parser.parse_args(list(argv) if argv is not None else None)


def environment() -> Mapping[str, str]:
    """The process environment: read here, once, and passed down."""
    return os.environ
