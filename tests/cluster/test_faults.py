"""The fault tier: the product rides out the control plane's faults (`make test-cluster`).

Its own control plane (etcd + kube-apiserver + kube-controller-manager 1.20, started for this
module), since the faults stop its parts. Each test runs a real crawl (receiver → CrawlJob →
operator → Job → Pod → worker → S3) and injects one fault while the worker runs: the worker waits
at a gate until the fault is over and the API takes writes again (so the local kubelet's final
status write never meets the outage), then the gate opens and the crawl finishes. Meanwhile the receiver is sent a new event.

Each test asserts: the CrawlJob ends Succeeded with its result, one Job and one worker run per
CrawlJob, the operator process alive throughout and its kopf run never restarted (but once, after
an apiserver restart, if kopf's re-list met the 404 a new apiserver answers before it has registered
the CRDs: docs/operator.md, "Faults"), the operator's
/healthz 200 throughout (or, with a liveness limit shorter than the outage, 503 only after the limit
and 200 again within seconds of the API's return), the receiver's /readyz 503 while CrawlJobs
cannot be written and 200 once they can, the event sent during the fault refused with 503 +
Retry-After and stored on its redelivery (nothing lost, nothing duplicated). Each prints, counted
from the fault's end: when the API accepts writes again, when the Job is Complete (its condition's
timestamp, 1 s resolution), when the CrawlJob is Succeeded, the operator's lag between the two, and
when the receiver is ready again: the "Faults" table of docs/operator.md. test_baseline is the same
run without a fault (the worker's own time).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawljob import kube
from fakes.waiting import wait_for

from .conftest import BIN, Child, Cluster, _install_crd, load_controlplane
from .faultproxy import FaultProxy
from .test_pipeline import ROWS, crawljob_for, s3_event, upload_csv

pytestmark = pytest.mark.slow

# Operator settings of the tier: a short resync and watch inactivity keep the tests short; the
# liveness limit stays at its default (300 s) unless a test lowers it.
RESYNC_SECONDS = "10"
INACTIVITY_SECONDS = 20.0

GATED_WORKER = """
import os, sys, time
gate, runs = os.environ["FAULT_GATE"], os.environ["FAULT_RUNS"]
while not os.path.exists(gate):
    time.sleep(0.1)
with open(runs, "a") as out:
    out.write(os.environ.get("CRAWLJOB_NAME", "?") + "\\n")
os.execv(os.environ["FAULT_WORKER"], ["crawljob-worker", *sys.argv[1:]])
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A control plane of this module's own (its components are stopped and restarted here)."""
    controlplane = load_controlplane()
    try:
        started = controlplane.start(tmp_path_factory.mktemp("faultplane"))
    except controlplane.ControlPlaneError as error:
        pytest.fail(f"the Kubernetes control plane did not start: {error}", pytrace=False)
    try:
        asyncio.run(_install_crd(Cluster(started.server, started.kubeconfig, started.directory)))
        yield started
    finally:
        controlplane.stop(started.directory)


@pytest.fixture(scope="module")
def cluster(plane: Any) -> Cluster:
    """Overrides the session's cluster: every fixture of conftest uses this module's plane."""
    return Cluster(server=plane.server, kubeconfig=plane.kubeconfig, directory=plane.directory)


@pytest.fixture
def proxy(plane: Any) -> Iterator[FaultProxy]:
    pki = plane.directory / "pki"
    running = FaultProxy(plane.server, pki / "ca.crt", pki / "apiserver.crt", pki / "apiserver.key")
    running.start()
    yield running
    running.stop()


def proxied_kubeconfig(cluster: Cluster, url: str, path: Path) -> Path:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = url
    path.write_text(json.dumps(config))
    return path


# ---- probes ----


def http_status(
    url: str, body: dict[str, Any] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)
    except (urllib.error.URLError, OSError):
        return 0, {}


@dataclass
class Sampler:
    """Polls the operator's /healthz and the receiver's /readyz every 0.5 s in a thread; each sample
    is (when both answered, /healthz status, /readyz status)."""

    healthz: str
    readyz: str
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            health = http_status(self.healthz, timeout=3)[0]
            ready = http_status(self.readyz, timeout=5)[0]
            # Stamped when the answers are in: /readyz can take its 3 s check, and a request sent
            # just before the fault's end may be answered after it (a 200 that is no fault's).
            self.samples.append((time.monotonic(), health, ready))
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def between(self, start: float, end: float) -> list[tuple[float, int, int]]:
        return [sample for sample in self.samples if start <= sample[0] <= end]

    def first_after(self, start: float, column: int, status: int = 200) -> float | None:
        return next((s[0] - start for s in self.samples if s[0] >= start and s[column] == status), None)


async def wait_succeeded(
    client: kube.KubeClient, namespace: str, name: str, timeout: float = 180
) -> dict[str, Any]:
    """Poll (every 0.2 s, riding out API errors) until the CrawlJob is Succeeded; fail on Failed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = await client.get(kube.CRAWLJOBS, namespace, name)
        except kube.KubeError:
            current = {}
        phase = (current.get("status") or {}).get("phase")
        if phase == "Succeeded":
            return current
        assert phase not in ("Failed", "Cancelled", "Superseded"), current.get("status")
        assert time.monotonic() < deadline, f"{name} not Succeeded after {timeout}s: {current.get('status')}"
        await asyncio.sleep(0.2)


async def wait_running(client: kube.KubeClient, namespace: str, name: str) -> None:
    async def running() -> bool:
        current = await client.get(kube.CRAWLJOBS, namespace, name)
        return (current.get("status") or {}).get("phase") == "Running"

    await wait_for(running, timeout=90, interval=0.3, what=f"CrawlJob {name} Running")


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def metric(url: str, name: str, labels: str = "") -> float:
    """The sum of a metric's samples whose labels contain *labels*."""
    total = 0.0
    for line in metrics_text(url).splitlines():
        if line.startswith(name + ("{" if labels or "{" in line.split(" ")[0] else " ")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- the scenario ----


@dataclass
class Crawl:
    """One tier run: the processes, the gate, and the probes."""

    client: kube.KubeClient
    namespace: str
    operator: Child
    health_url: str
    receiver_url: str
    gate: Path
    runs: Path
    s3_client: Any
    bucket: str


@pytest.fixture
async def crawl(
    cluster: Cluster,
    client: kube.KubeClient,
    namespace: str,
    operator: Callable[..., Child],
    start_receiver: Callable[..., str],
    kubelet: Child,
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    """A factory: the operator (gated worker) and the receiver, through *kubeconfig* if given."""

    async def start(kubeconfig: Path | None = None, **operator_env: str) -> Crawl:
        gate, runs = tmp_path / "gate", tmp_path / "runs"
        runs.touch()
        extra = {"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}
        kubelet.start()
        child = operator(
            CRAWLJOB_WORKER_COMMAND=json.dumps([sys.executable, "-c", GATED_WORKER]),
            CRAWLJOB_WORKER_ENV=json.dumps(
                [{"name": k, "value": v} for k, v in gated_env(s3_client, gate, runs).items()]
            ),
            CRAWLJOB_RESYNC_SECONDS=RESYNC_SECONDS,
            CRAWLJOB_WATCH_INACTIVITY_SECONDS=str(INACTIVITY_SECONDS),
            **extra,
            **operator_env,
        )
        port = child.env["CRAWLJOB_HEALTH_PORT"]
        receiver = start_receiver(**extra)
        return Crawl(
            client, namespace, child, f"http://127.0.0.1:{port}", receiver, gate, runs, s3_client, bucket
        )

    yield start


def gated_env(s3_client: Any, gate: Path, runs: Path) -> dict[str, str]:
    endpoint = s3_client.meta.endpoint_url
    credentials = s3_client._request_signer._credentials
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        "AWS_DEFAULT_REGION": s3_client.meta.region_name,
        "FAULT_GATE": str(gate),
        "FAULT_RUNS": str(runs),
        "FAULT_WORKER": str(BIN / "crawljob-worker"),
    }


def condition_time(job: dict[str, Any], kind: str) -> float:
    """The wall-clock time (epoch seconds) a Job's condition became true."""
    [found] = [c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    stamp = found.get("lastTransitionTime") or found["lastProbeTime"]
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def writable_again(client: kube.KubeClient, namespace: str, timeout: float = 120) -> float:
    """When (monotonic) the API accepts a CrawlJob again (a dry-run create, as the receiver checks)."""
    from crawljob.receiver.readiness import check_writable

    deadline = time.monotonic() + timeout
    while True:
        try:
            await check_writable(client, namespace, timeout=3)
            return time.monotonic()
        except kube.KubeError:
            assert time.monotonic() < deadline, "the API did not accept writes again"
            await asyncio.sleep(0.2)


def kopf_run_failures(log: str) -> list[str]:
    """The causes of the failed kopf runs the operator logged (each one restarted in-process)."""
    return re.findall(r"the kopf run failed \((.*?)\); restarting", log)


@dataclass
class Outcome:
    api_back: float  # fault end → the API accepts writes again (the apiserver's own recovery)
    job_complete_after: float  # fault end → the Job's Complete condition (1 s resolution)
    succeeded_after: float  # fault end → the CrawlJob seen Succeeded
    health_back: float | None  # fault end → operator /healthz 200 (None: never failed)
    ready_back: float | None  # fault end → receiver /readyz 200
    samples_during: list[tuple[float, int, int]]
    mid_fault_post: int
    mid_fault_retry_after: str | None


async def run_fault(
    crawl: Crawl,
    name: str,
    duration: float,
    begin: Callable[[], None],
    end: Callable[[], None],
    writable: bool,
    apiserver_restarted: bool = False,
) -> Outcome:
    """Start a crawl, hold its worker, inject the fault for *duration* s, release, and check it all."""
    etag = upload_csv(crawl.s3_client, crawl.bucket, f"in/{name}.csv")
    status, _ = http_status(
        crawl.receiver_url + "/v1/trigger", s3_event(crawl.bucket, f"in/{name}.csv", etag)
    )
    assert status == 202
    crawljob, _ = crawljob_for(crawl.bucket, f"in/{name}.csv", etag, crawl.namespace)
    await wait_running(crawl.client, crawl.namespace, crawljob)
    # The event of another object, sent to the receiver during the fault.
    late_etag = upload_csv(crawl.s3_client, crawl.bucket, f"in/{name}-late.csv")
    late_event = s3_event(crawl.bucket, f"in/{name}-late.csv", late_etag)
    late, _ = crawljob_for(crawl.bucket, f"in/{name}-late.csv", late_etag, crawl.namespace)

    sampler = Sampler(crawl.health_url + "/healthz", crawl.receiver_url + "/readyz")
    try:
        started = time.monotonic()
        begin()
        await asyncio.sleep(duration / 2)
        mid_status, mid_headers = await asyncio.to_thread(
            http_status, crawl.receiver_url + "/v1/trigger", late_event
        )
        await asyncio.sleep(max(0.0, started + duration - time.monotonic()))
        healing = time.monotonic()  # (a restart returns once the component is ready again)
        end()
        ended, ended_wall = time.monotonic(), time.time()
        api_back = await writable_again(crawl.client, crawl.namespace) - ended
        # The worker finishes only once the API takes writes again: the local kubelet does not
        # retry a Pod's final status write (after etcd comes back, the apiserver needs ~15 s more).
        crawl.gate.touch()
        done = await wait_succeeded(crawl.client, crawl.namespace, crawljob)
        succeeded_after = time.monotonic() - ended
        # Redelivery of the event refused during the fault (S3/SNS retry it): stored now.
        status, _ = http_status(crawl.receiver_url + "/v1/trigger", late_event)
        assert status == 202
        late_done = await wait_succeeded(crawl.client, crawl.namespace, late)
        await asyncio.sleep(1.5)  # a few more samples after the recovery
    finally:
        sampler.stop()

    for finished in (done, late_done):
        result = finished["status"]["result"]
        assert result["rowsRead"] == ROWS and result["rowsWritten"] == ROWS, result
    # One Job and one worker run per CrawlJob; the operator never restarted. Its kopf run neither,
    # but for one case: a restarted apiserver serves for a moment before it has registered the
    # CRDs, and kopf's re-list of CrawlJobs meeting that 404 is not retried (it ends the run).
    jobs = await crawl.client.list(kube.JOBS, crawl.namespace)
    assert sorted(job["metadata"]["name"] for job in jobs) == sorted([crawljob, late])
    assert sorted(crawl.runs.read_text().split()) == sorted([crawljob, late])
    assert crawl.operator.process is not None and crawl.operator.process.poll() is None
    log = crawl.operator.log_text()
    failures = kopf_run_failures(log)
    assert len(failures) <= (1 if apiserver_restarted else 0), failures
    assert all("APINotFoundError" in failure for failure in failures), failures
    assert log.count("operator started:") == 1 + len(failures), log[-3000:]
    assert metric(crawl.health_url + "/metrics", "crawljob_kopf_run_restarts_total") == len(failures)
    if writable:
        assert mid_status == 202, mid_status
    else:
        assert mid_status == 503 and mid_headers.get("Retry-After"), (mid_status, mid_headers)

    # Samples of the fault, from 4 s in (the receiver reuses a readiness answer for 2 s).
    during = sampler.between(started + (4 if duration > 10 else 0), healing)
    [complete] = [c for c in jobs if c["metadata"]["name"] == crawljob]
    completed_at = condition_time(complete, "Complete")
    outcome = Outcome(
        api_back=api_back,
        job_complete_after=completed_at - ended_wall,
        succeeded_after=succeeded_after,
        health_back=sampler.first_after(ended, 1) if any(s[1] != 200 for s in during) else None,
        ready_back=sampler.first_after(ended, 2),
        samples_during=during,
        mid_fault_post=mid_status,
        mid_fault_retry_after=mid_headers.get("Retry-After"),
    )
    # The receiver: not ready while it cannot write (after its 2 s cache), ready otherwise.
    readiness = {s[2] for s in during}
    assert readiness == ({200} if writable else {503}), sorted(set(during))
    # Ready again within a few seconds of the API (its 2 s cache, the probe's 0.5 s period).
    assert outcome.ready_back is not None and outcome.ready_back < api_back + 5, (
        outcome.ready_back,
        api_back,
    )
    health = "never failed" if outcome.health_back is None else f"{outcome.health_back:.1f}s"
    lag = succeeded_after - outcome.job_complete_after
    print(
        f"\nFAULT | {name} | {duration:.0f} s | API writable +{api_back:.1f} s | Job Complete "
        f"+{outcome.job_complete_after:.0f} s | CrawlJob Succeeded +{succeeded_after:.1f} s | operator lag "
        f"{lag:.1f} s | receiver ready +{outcome.ready_back:.1f} s | operator /healthz: {health} |"
    )
    return outcome


def assert_live_throughout(outcome: Outcome) -> None:
    statuses = {s[1] for s in outcome.samples_during}
    assert statuses == {200}, statuses


def pause_component(plane: Any, name: str) -> Callable[[], None]:
    controlplane = load_controlplane()
    return lambda: controlplane.pause(plane.directory, name)


def restart_component(plane: Any, name: str) -> Callable[[], None]:
    controlplane = load_controlplane()
    return lambda: controlplane.restart(plane, name)


# ---- the faults ----


async def test_baseline_without_a_fault(crawl: Callable[..., Any]) -> None:
    """The same run with nothing injected: the times of the table's first row."""
    running = await crawl()
    outcome = await run_fault(running, "baseline", 4, lambda: None, lambda: None, writable=True)
    assert_live_throughout(outcome)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seconds", [60, 120])
async def test_apiserver_stopped_mid_crawl(crawl: Callable[..., Any], plane: Any, seconds: int) -> None:
    # At 120 s the liveness limit (60 s) is shorter than the outage: /healthz must fail after it,
    # and be 200 again within seconds of the API's return.
    limit = 60 if seconds == 120 else 300
    running = await crawl(CRAWLJOB_LIVENESS_SECONDS=str(limit))
    outcome = await run_fault(
        running,
        f"apiserver-{seconds}s",
        seconds,
        pause_component(plane, "kube-apiserver"),
        restart_component(plane, "kube-apiserver"),
        writable=False,
        apiserver_restarted=True,
    )
    if seconds > limit:
        failed = [s[0] for s in outcome.samples_during if s[1] == 503]
        assert failed, "the operator's /healthz never failed past its liveness limit"
        assert outcome.health_back is not None and outcome.health_back < outcome.api_back + 10, outcome
    else:
        assert_live_throughout(outcome)


@pytest.mark.timeout(600)
async def test_etcd_stopped_mid_crawl(crawl: Callable[..., Any], plane: Any) -> None:
    running = await crawl()
    outcome = await run_fault(
        running,
        "etcd-30s",
        30,
        pause_component(plane, "etcd"),
        restart_component(plane, "etcd"),
        writable=False,
    )
    assert_live_throughout(outcome)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seconds", [75, 180])
async def test_apiserver_answering_503_through_a_proxy(
    crawl: Callable[..., Any], cluster: Cluster, proxy: FaultProxy, tmp_path: Path, seconds: int
) -> None:
    """kopf's default backoffs give up after ~54 s and the process exits; ours retry for good."""
    kubeconfig = proxied_kubeconfig(cluster, proxy.url, tmp_path / "proxied.kubeconfig")
    running = await crawl(kubeconfig)
    outcome = await run_fault(running, f"503-{seconds}s", seconds, proxy.fail, proxy.heal, writable=False)
    assert proxy.answered_503 > 0
    assert_live_throughout(outcome)


@pytest.mark.timeout(600)
async def test_all_watch_connections_frozen(
    crawl: Callable[..., Any], cluster: Cluster, proxy: FaultProxy, tmp_path: Path
) -> None:
    kubeconfig = proxied_kubeconfig(cluster, proxy.url, tmp_path / "proxied.kubeconfig")
    running = await crawl(kubeconfig)
    seen_before = running.operator.log_text().count("is inactive, reconnecting")
    frozen_at: list[float] = []

    def freeze() -> None:
        frozen_at.append(time.monotonic())
        proxy.freeze()

    outcome = await run_fault(running, "frozen-watches-90s", 90, freeze, proxy.heal, writable=True)
    assert_live_throughout(outcome)
    assert proxy.frozen_streams > 0
    # Noticed within one inactivity period: kopf reopened the watches, and said so at INFO.
    log = running.operator.log_text()
    lines = [line for line in log.splitlines() if "is inactive, reconnecting" in line]
    assert len(lines) > seen_before and all(" INFO " in line for line in lines), lines[:3]
    restarts = metric(running.health_url + "/metrics", "crawljob_watch_restarts_total", 'reason="inactive"')
    # Three watched resources, each reopened every inactivity period (20 s) of the 90 s freeze.
    assert restarts >= 9, restarts
    text = metrics_text(running.health_url + "/metrics")
    for plural in ("crawljobs", "jobs", "pods"):
        assert f'crawljob_watch_event_age_seconds{{resource="{plural}"}}' in text
