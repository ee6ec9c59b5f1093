"""The local stack: Kubernetes API emulator, S3 server and job runner for `make run` and tests."""
