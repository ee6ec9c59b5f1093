"""Source and output locations: `s3://bucket/key`, `file://path` or a plain path (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from crawljob_worker.errors import invalid_arguments


@dataclass(frozen=True)
class Location:
    """An S3 object/prefix (bucket set) or a local path (bucket None)."""

    path: str
    bucket: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.path}" if self.bucket is not None else self.path

    def child(self, name: str) -> Location:
        """*name* under this prefix (S3 keys join with '/', local paths too)."""
        base = self.path if not self.path or self.path.endswith("/") else self.path + "/"
        return Location(base + name, self.bucket)


def parse_location(text: str, *, what: str) -> Location:
    """`s3://bucket/key`, `file:///abs/path`, `file:rel` or a plain path."""
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise invalid_arguments(f"{what} {text!r} has no bucket (s3://bucket/key)")
        return Location(parsed.path.lstrip("/"), parsed.netloc)
    if text.startswith("file://"):
        return Location(unquote(text[len("file://") :]))
    if "://" in text:
        raise invalid_arguments(
            f"{what} {text!r}: only s3:// URIs, file:// URIs and local paths are supported"
        )
    return Location(text)
