"""crawljob: receiver, operator and local stack for the CrawlJob custom resource."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crawljob")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
