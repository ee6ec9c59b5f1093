"""crawljob's worker: stream one CSV object from S3 (or a file) and convert it in bounded memory."""

__version__ = "0.1.0"
