"""Run the built images as a cluster would: non-root, read-only root, no capabilities.

The worker image converts a generated CSV from the loopback S3 (moto) and writes its termination
message into a mounted file; the operator image's receiver answers /healthz and creates a CrawlJob
in the Kubernetes API emulator.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawljob import kube, resource
from crawljob.local.s3 import LocalS3, free_port
from crawljob.local.sample import generate_csv
from fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
OPERATOR_IMAGE = f"localhost/crawljob-operator:{VERSION}"
WORKER_IMAGE = f"localhost/crawljob-worker:{VERSION}"
# podman as it runs here (see DESIGN.md "Images"), hardened like the chart's pods.
PODMAN = ["podman", "--runtime", "runc"]
RUN = [
    *PODMAN, "run", "--rm", "--network=host",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
    "--read-only", "--tmpfs", "/tmp:rw,size=256m", "--cap-drop=ALL", "--security-opt=no-new-privileges",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def images_built() -> None:
    for image in (OPERATOR_IMAGE, WORKER_IMAGE):
        found = subprocess.run([*PODMAN, "image", "exists", image], check=False)
        assert found.returncode == 0, f"{image} is not built: run `make images` (make image-test does)"


def image_user(image: str) -> str:
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Config.User}}", image],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def helm_test_hook_script() -> tuple[str, str]:
    """The inline script of the chart's `helm test` pod, and the receiver URL it calls."""
    helm = Path(sys.executable).parent / "helm"
    assert helm.is_file(), "helm is missing: `make tools` installs it (make image-test does)"
    rendered = subprocess.run(
        [str(helm), "template", "demo", str(ROOT / "charts" / "crawljob"), "--namespace", "crawljob-system",
         "--show-only", "templates/tests/test-healthz.yaml"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pod = yaml.safe_load(rendered.stdout)
    return pod["spec"]["containers"][0]["command"][-1], "http://demo-crawljob-receiver.crawljob-system.svc:80"


def test_images_run_as_a_numeric_non_root_user() -> None:
    for image in (OPERATOR_IMAGE, WORKER_IMAGE):
        assert image_user(image) == "10001:10001", image
        result = subprocess.run([*RUN, "--entrypoint", "id", image, "-u"], capture_output=True, text=True)
        assert result.stdout.strip() == "10001", result.stderr


def test_final_images_have_no_compiler() -> None:
    for image in (OPERATOR_IMAGE, WORKER_IMAGE):
        script = "for c in gcc cc g++ clang make; do command -v $c && exit 1; done; exit 0"
        result = subprocess.run(
            [*RUN, "--entrypoint", "sh", image, "-c", script], capture_output=True, text=True
        )
        assert result.returncode == 0, f"{image} ships a compiler: {result.stdout}"


def test_operator_image_has_both_commands() -> None:
    result = subprocess.run([*RUN, OPERATOR_IMAGE, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "receiver" in result.stdout and "operator" in result.stdout
    version = subprocess.run([*RUN, OPERATOR_IMAGE, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == VERSION


def importable(image: str, modules: tuple[str, ...]) -> list[str]:
    """Which of *modules* the image's Python can import (find_spec: nothing is executed)."""
    script = (
        "import importlib.util as u, json, sys; "
        "print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    )
    result = subprocess.run(
        [*RUN, "--entrypoint", "python3", image, "-c", script, *modules],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found: list[str] = json.loads(result.stdout)
    return found


def test_worker_image_has_no_operator_dependencies() -> None:
    assert importable(WORKER_IMAGE, ("kopf", "aiohttp", "kmock", "moto", "prometheus_client")) == []
    assert importable(WORKER_IMAGE, ("pandas", "pyarrow", "boto3", "kubernetes")) == [
        "pandas", "pyarrow", "boto3", "kubernetes",
    ]  # fmt: skip


def test_operator_image_has_no_worker_dependencies() -> None:
    assert importable(OPERATOR_IMAGE, ("pandas", "pyarrow", "numpy", "kmock", "moto")) == []
    # boto3: CrawlSource sweeps list buckets; the receiver's --resolve-versions sends HEADs.
    assert importable(OPERATOR_IMAGE, ("kopf", "aiohttp", "prometheus_client", "kubernetes", "boto3")) == [
        "kopf", "aiohttp", "prometheus_client", "kubernetes", "boto3",
    ]  # fmt: skip


def test_operator_image_names_the_extra_a_worker_run_would_need() -> None:
    result = subprocess.run(
        [*RUN, OPERATOR_IMAGE, "worker", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "pip install 'crawljob[worker]'" in result.stderr, result.stderr


def termination_file(tmp_path: Path) -> Path:
    """An empty, world-writable file to mount at /dev/termination-log, as the kubelet does."""
    path = tmp_path / "termination-log"
    path.write_text("")
    path.chmod(0o666)
    return path


def run_worker(local_s3: LocalS3, message_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = [f"--env={name}={value}" for name, value in local_s3.environment().items()]
    return subprocess.run(
        [*RUN, *env, "-v", f"{message_file}:/dev/termination-log", WORKER_IMAGE, *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_worker_image_converts_a_csv_from_loopback_s3(
    local_s3: LocalS3, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    sample = generate_csv(tmp_path / "readings.csv", size_bytes=2_000_000)
    s3_client.upload_file(str(sample.path), bucket, "incoming/readings.csv")
    message_file = termination_file(tmp_path)

    result = run_worker(local_s3, message_file, f"s3://{bucket}/incoming/readings.csv",
                        "--output", f"s3://{bucket}/out/readings/")  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    message = json.loads(message_file.read_text())
    assert message["outcome"] == "Succeeded"
    assert message["exitCode"] == 0
    assert message["rowsRead"] == sample.rows
    assert message["rowsWritten"] + message["rowsRejected"] == sample.rows
    manifest_uri = message["manifestUri"]
    assert manifest_uri.startswith(f"s3://{bucket}/out/readings/") and manifest_uri.endswith("_manifest.json")
    manifest_key = manifest_uri.removeprefix(f"s3://{bucket}/")
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["rowsWritten"] == message["rowsWritten"]
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="out/readings/")
    assert len(listed["Contents"]) >= 2  # data part(s) and the manifest


def test_worker_image_reports_a_missing_object_as_permanent(
    local_s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    message_file = termination_file(tmp_path)
    result = run_worker(
        local_s3, message_file, f"s3://{bucket}/missing.csv", "--output", f"s3://{bucket}/out/"
    )
    assert result.returncode == 4, result.stderr[-3000:]
    message = json.loads(message_file.read_text())
    assert message["outcome"] == "Failed"
    assert message["reason"] == "SourceNotFound"


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None) -> tuple[int, Any]:
    """GET url until it answers 200 (status, JSON body), or fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.load(response)
        except (urllib.error.URLError, OSError) as error:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the container exited with {process.returncode}") from error
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout} s: {error}") from error
            time.sleep(0.2)


@pytest.fixture
async def receiver_container(emulator: tuple[Any, str]) -> AsyncIterator[str]:
    """The operator image running `crawljob receiver` against the emulator; yields its base URL.

    Async, so the emulator (served by this event loop) keeps answering while we wait in a thread.
    """
    port = free_port()
    name = f"crawljob-receiver-test-{port}"
    env = {
        "CRAWLJOB_PORT": str(port),
        "CRAWLJOB_HOST": "127.0.0.1",
        "CRAWLJOB_KUBE_SERVER": emulator[1],
        "CRAWLJOB_NAMESPACE": "default",
        "CRAWLJOB_AUTH_MODE": "token",
        "CRAWLJOB_AUTH_TOKEN": "image-test-token",
    }
    command = [*RUN, "--name", name, *(f"--env={k}={v}" for k, v in env.items()), OPERATOR_IMAGE, "receiver"]
    process = await asyncio.to_thread(
        subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_for_http, f"{base}/healthz", 60, process)
        yield base
    finally:
        await asyncio.to_thread(
            subprocess.run, [*PODMAN, "stop", "--time", "5", name], capture_output=True, check=False
        )
        await asyncio.to_thread(process.wait, 30)


async def test_operator_image_receiver_answers_healthz_and_creates_crawljobs(
    receiver_container: str, kube_client: kube.KubeClient
) -> None:
    def call(path: str, body: bytes | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            receiver_container + path, data=body, headers={"Authorization": "Bearer image-test-token"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)

    # The emulator serves from this event loop: call the container from a thread.
    status, body = await asyncio.to_thread(call, "/healthz")
    assert (status, body["status"]) == (200, "ok")
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "incoming"}, "object": {"key": "drops/readings.csv", "size": 10, "eTag": "abc"}}}]}  # fmt: skip
    status, body = await asyncio.to_thread(call, "/v1/trigger", json.dumps(event).encode())
    assert status == 202, body
    (created,) = body["crawljobs"]
    listed = await kube_client.list(kube.CRAWLJOBS, "default")
    assert [item["metadata"]["name"] for item in listed] == [created["name"]]
    (crawljob,) = listed
    source = crawljob["spec"]["source"]
    assert (source["bucket"], source["key"]) == ("incoming", "drops/readings.csv")


async def test_helm_test_hook_passes_against_the_receiver_image(receiver_container: str) -> None:
    """The chart's `helm test` pod script, run in the operator image, accepts a live receiver."""
    script, cluster_url = helm_test_hook_script()
    assert cluster_url in script
    local_script = script.replace(cluster_url, receiver_container)
    result = await asyncio.to_thread(
        subprocess.run,
        [*RUN, "--entrypoint", "python3", OPERATOR_IMAGE, "-c", local_script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200" in result.stdout


@pytest.fixture
async def operator_container(emulator: tuple[Any, str]) -> AsyncIterator[str]:
    """The operator image running `crawljob operator` against the emulator; yields its health URL."""
    port = free_port()
    name = f"crawljob-operator-test-{port}"
    env = {
        "CRAWLJOB_KUBE_SERVER": emulator[1],
        "CRAWLJOB_NAMESPACE": "default",
        "CRAWLJOB_HEALTH_PORT": str(port),
        "CRAWLJOB_WORKER_IMAGE": WORKER_IMAGE,
        "CRAWLJOB_WORKER_SERVICE_ACCOUNT": "crawljob-worker",
    }
    command = [*RUN, "--name", name, *(f"--env={k}={v}" for k, v in env.items()), OPERATOR_IMAGE, "operator"]
    process = await asyncio.to_thread(
        subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_for_http, f"{base}/healthz", 60, process)
        yield base
    finally:
        await asyncio.to_thread(
            subprocess.run, [*PODMAN, "stop", "--time", "5", name], capture_output=True, check=False
        )
        await asyncio.to_thread(process.wait, 30)


async def test_operator_image_answers_healthz_and_turns_a_crawljob_into_a_job(
    operator_container: str, kube_client: kube.KubeClient
) -> None:
    status, body = await asyncio.to_thread(wait_for_http, f"{operator_container}/healthz", 10, None)
    assert status == 200, body
    ref = resource.ObjectRef(bucket="incoming", key="drops/readings.csv", etag="abc")
    crawljob = resource.crawljob_manifest(ref, "default")
    metadata = crawljob["metadata"]
    assert isinstance(metadata, dict)
    name = metadata["name"]
    await kube_client.create(kube.CRAWLJOBS, "default", crawljob)

    async def job_made() -> Any:
        jobs = await kube_client.list(kube.JOBS, "default")
        return [job for job in jobs if job["metadata"]["name"] == name]

    (job,) = await wait_for(job_made, timeout=60, what=f"the operator to create Job {name}")
    (worker,) = job["spec"]["template"]["spec"]["containers"]
    assert worker["image"] == WORKER_IMAGE
    assert worker["args"][:2] == ["--source-bucket=incoming", "--source-key=drops/readings.csv"]
