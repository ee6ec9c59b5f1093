"""The worker and the operator agree on their contract (crawljob_worker.contract, docs/contracts.md):
each test fails when one side changes and the other does not follow."""

from __future__ import annotations

import time
from typing import Any

from crawljob import events, resource
from crawljob.models import PodStatus
from crawljob.operator import jobs, workload
from crawljob.operator.settings import OperatorSettings
from crawljob_worker import __main__ as worker_main
from crawljob_worker import errors
from crawljob_worker.contract import RESULT_KEYS, ExitCode
from crawljob_worker.counters import Counters
from crawljob_worker.report import termination_message
from crawljob_worker.settings import settings_from_args

CRAWLJOB: dict[str, Any] = {
    "metadata": {"name": "data-csv-0123456789", "namespace": "crawl", "uid": "uid-1"},
    "spec": {
        "source": {"bucket": "in", "key": "dir/data.csv", "versionId": "v1"},
        "output": {"format": "jsonl"},
        "csv": {"delimiter": ";", "header": False, "encoding": "latin-1", "dtypes": {"id": "int64"}},
        "maxRejectRatio": 0.5,
    },
}


def _worker_container(settings: OperatorSettings) -> dict[str, Any]:
    container: dict[str, Any] = jobs.build_job(CRAWLJOB, settings)["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def test_every_failing_exit_code_of_the_worker_has_a_meaning_for_the_operator() -> None:
    failing = set(ExitCode) - {ExitCode.SUCCEEDED, ExitCode.CRASHED}
    assert set(workload.EXIT_CODES) == failing


def test_exactly_the_permanent_exit_codes_fail_the_job_without_a_retry() -> None:
    job = jobs.build_job(CRAWLJOB, OperatorSettings())
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["containerName"] == _worker_container(OperatorSettings())["name"]
    retried = {ExitCode.SUCCEEDED, ExitCode.CRASHED, ExitCode.TRANSIENT}
    assert set(rule["onExitCodes"]["values"]) == {int(code) for code in set(ExitCode) - retried}
    assert errors.transient("throttled").code not in rule["onExitCodes"]["values"]


def test_the_workers_termination_message_gives_the_operator_every_result_field() -> None:
    counters = Counters(10, 9, 1, 1234, "s3://out/x/", 2, "s3://out/x/rejects/", "s3://out/x/manifest.json")
    summary = worker_main.summary(0, "Succeeded", "done", counters, time.monotonic())
    parsed = workload.parse_termination_message(termination_message(summary))
    assert parsed.problem is None
    assert parsed.result is not None and set(parsed.result) == set(RESULT_KEYS)
    assert parsed.result["rowsRejected"] == 1 and parsed.result["outputUri"] == "s3://out/x/"


def test_the_operator_reads_a_failed_workers_reason_and_message() -> None:
    failure = errors.bad_input("line 3: not UTF-8")
    summary = worker_main.summary(failure.code, failure.reason, failure.message, Counters(), time.monotonic())
    container = _worker_container(OperatorSettings())
    terminated = {"exitCode": int(failure.code), "message": termination_message(summary)}
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": container["name"], "state": {"terminated": terminated}}],
        },
    }
    reason, message = workload.describe_pod_failure(PodStatus.parse(pod))
    assert reason == "BadInput" and "line 3: not UTF-8" in message


def test_the_worker_accepts_the_arguments_and_message_path_the_operator_gives_it() -> None:
    container = _worker_container(OperatorSettings(default_output_uri="s3://out/crawls"))
    settings = settings_from_args(container["args"], {})
    assert settings.source == "s3://in/dir/data.csv" and settings.version_id == "v1"
    assert settings.output == "s3://out/crawls/data-csv-0123456789/"
    assert (settings.format, settings.delimiter, settings.header) == ("jsonl", ";", False)
    assert settings.max_reject_ratio == 0.5 and set(settings.dtypes) == {"id"}
    assert settings.termination_log == container["terminationMessagePath"]


def test_the_receiver_never_crawls_what_the_operator_writes_by_default() -> None:
    output = jobs.output_uri(CRAWLJOB["spec"], "data-csv-0123456789", OperatorSettings())
    bucket, prefix = events.output_location(output)
    assert bucket == "in" and prefix.startswith(resource.DEFAULT_OUTPUT_PREFIX)
    written = resource.ObjectRef(bucket="another-bucket", key=prefix + "part-00000.parquet", size=10)
    assert events.refusal(written, events.Filters()) is not None
