"""CrawlJob → Job manifest, per the Job contract in docs/contracts.md."""

from __future__ import annotations

from typing import Any

import pytest

from crawljob.models import Job
from crawljob.operator import jobs
from crawljob.operator.settings import OperatorSettings, operator_parser, operator_settings


def _crawljob(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "crawljob.io/v1alpha1",
        "kind": "CrawlJob",
        "metadata": {"name": "data-csv-0123456789", "namespace": "crawl", "uid": "uid-1", "generation": 1},
        "spec": {"source": {"bucket": "in", "key": "dir/data file.csv"}, **spec},
    }


SETTINGS = OperatorSettings(
    worker_image="registry/worker:1",
    worker_env=({"name": "AWS_ENDPOINT_URL_S3", "value": "http://s3:9000"},),
    worker_resources={"requests": {"memory": "256Mi"}},
    job_ttl_seconds=600,
)


def test_job_has_contract_metadata_and_owner_reference() -> None:
    job = jobs.build_job(_crawljob(), SETTINGS)
    metadata = job["metadata"]
    assert metadata["name"] == "data-csv-0123456789"
    assert metadata["namespace"] == "crawl"
    assert metadata["labels"] == {
        "app.kubernetes.io/name": "crawljob",
        "app.kubernetes.io/managed-by": "crawljob-operator",
        "crawljob.io/crawljob": "data-csv-0123456789",
    }
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "crawljob.io/v1alpha1",
            "kind": "CrawlJob",
            "name": "data-csv-0123456789",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert Job.parse(job).is_owned_by("uid-1") and not Job.parse(job).is_owned_by("other")


def test_job_spec_retries_deadline_ttl_and_pod_failure_policy() -> None:
    spec = jobs.build_job(_crawljob(backoffLimit=1, activeDeadlineSeconds=90), SETTINGS)["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 90
    assert spec["ttlSecondsAfterFinished"] == 600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2, 3, 4, 5, 6]},
    }
    assert rules[1] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    defaults = jobs.build_job(_crawljob(), SETTINGS)["spec"]
    assert defaults["backoffLimit"] == 3
    assert "activeDeadlineSeconds" not in defaults


def test_container_command_args_env_and_security() -> None:
    pod = jobs.build_job(
        _crawljob(
            output={"uri": "s3://out/p/", "format": "jsonl"},
            csv={
                "delimiter": ";",
                "header": False,
                "encoding": "latin-1",
                "compression": "gzip",
                "dtypes": {"b": "int64", "a": "string"},
            },
            maxRejectRatio=0.05,
            jobTemplate={
                "env": [{"name": "EXTRA", "value": "1"}],
                "image": "custom:2",
                "resources": {"limits": {"memory": "1Gi"}},
                "serviceAccountName": "sa",
            },
        ),
        SETTINGS,
    )["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "worker"
    assert container["image"] == "custom:2"
    assert container["command"] == ["crawljob-worker"]
    assert container["args"] == [
        "--source-bucket=in",
        "--source-key=dir/data file.csv",
        "--output",
        "s3://out/p/",
        "--run-id",
        "uid-1-1",
        "--format",
        "jsonl",
        "--delimiter",
        ";",
        "--no-header",
        "--encoding",
        "latin-1",
        "--compression",
        "gzip",
        "--dtypes",
        '{"a": "string", "b": "int64"}',
        "--max-reject-ratio",
        "0.05",
    ]
    assert [item["name"] for item in container["env"]] == [
        "CRAWLJOB_NAME",
        "CRAWLJOB_NAMESPACE",
        "AWS_ENDPOINT_URL_S3",
        "EXTRA",
    ]
    assert container["env"][1]["value"] == "crawl"
    assert container["resources"] == {"limits": {"memory": "1Gi"}}
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "sa"
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (OperatorSettings(), "s3://in/crawljob-output/data-csv-0123456789/"),
        (OperatorSettings(default_output_uri="s3://out/base/"), "s3://out/base/data-csv-0123456789/"),
    ],
)
def test_default_output_uri(settings: OperatorSettings, expected: str) -> None:
    args = jobs.build_job(_crawljob(), settings)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--source-bucket=in", "--source-key=dir/data file.csv", "--output", expected]


def test_rerun_gets_its_own_job_name_within_dns_limits() -> None:
    body = _crawljob()
    body["status"] = {"run": 3}
    assert jobs.build_job(body, SETTINGS)["metadata"]["name"] == "data-csv-0123456789-r3"
    assert len(jobs.job_name("x" * 52, 99)) + 6 <= 63


def test_every_run_passes_its_own_run_id_the_same_for_all_its_shards() -> None:
    from crawljob_worker.settings import settings_from_args

    body = _crawljob(shards=3)
    first = jobs.build_job(body, SETTINGS, jobs.JobFeatures(indexed=True))
    body["status"] = {"run": 2}
    second = jobs.build_job(body, SETTINGS, jobs.JobFeatures(indexed=True))
    ids = [
        # As an Indexed Job's pod reads them (its index from $JOB_COMPLETION_INDEX).
        settings_from_args(
            job["spec"]["template"]["spec"]["containers"][0]["args"], {"JOB_COMPLETION_INDEX": "1"}
        ).run_id
        for job in (first, second)
    ]
    assert ids == ["uid-1-1", "uid-1-2"]  # one Job's pods (every shard, every retry) share the first
    assert "--run-id" not in jobs.worker_args(body["spec"], "n", SETTINGS)


def test_settings_from_flags_and_env() -> None:
    parser = operator_parser({"CRAWLJOB_MAX_ACTIVE": "3", "CRAWLJOB_WORKER_COMMAND": '["python", "w.py"]'})
    settings = operator_settings(
        parser.parse_args(["--backoff-limit", "0", "--worker-env", '[{"name": "A", "value": "b"}]'])
    )
    assert settings.max_active == 3
    assert settings.worker_command == ("python", "w.py")
    assert settings.backoff_limit == 0
    assert settings.worker_env == ({"name": "A", "value": "b"},)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--worker-command", "crawljob-worker"], "--worker-command is not valid JSON"),
        (["--worker-command", "[]"], "non-empty JSON list"),
        (["--max-active", "0"], "--max-active must be at least 1"),
        (["--worker-env", '[{"value": "x"}]'], "EnvVar objects with a name"),
        (["--default-output-uri", "/tmp/x"], "s3://bucket/prefix"),
    ],
)
def test_bad_settings_say_what_is_wrong(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        operator_settings(operator_parser({}).parse_args(argv))


def test_job_manifest_is_valid_against_the_kubernetes_schema() -> None:
    validate = pytest.importorskip("kubernetes_validate")  # a dev dependency
    job = jobs.build_job(
        _crawljob(
            backoffLimit=1,
            activeDeadlineSeconds=60,
            jobTemplate={
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
            },
        ),
        SETTINGS,
    )
    validate.validate(job, "1.33", strict=True)


@pytest.mark.parametrize(
    ("version", "indexed", "per_index"),
    [
        ({"major": "1", "minor": "20"}, False, False),
        ({"major": "1", "minor": "24"}, True, False),
        ({"major": "1", "minor": "29+"}, True, True),
        ({"major": "1", "minor": "26", "gitVersion": "v1.26.4+k3s1"}, True, False),
        ({}, False, False),
    ],
)
def test_job_features_follow_the_server_version(
    version: dict[str, str], indexed: bool, per_index: bool
) -> None:
    assert jobs.features_of(version) == jobs.JobFeatures(indexed=indexed, backoff_limit_per_index=per_index)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, 1),
        ({"shards": 4}, 4),
        ({"shards": 500}, 64),  # --max-shards
        ({"shardSizeMb": 100, "source": {"bucket": "b", "key": "k", "size": 250 * 2**20}}, 3),
        ({"shardSizeMb": 100, "source": {"bucket": "b", "key": "k"}}, 1),  # no size in the event
        ({"shards": 2, "shardSizeMb": 1, "source": {"bucket": "b", "key": "k", "size": 10 * 2**20}}, 2),
        # spec.shards takes precedence, 1 too (it ran 10 shards by the size before).
        ({"shards": 1, "shardSizeMb": 1, "source": {"bucket": "b", "key": "k", "size": 10 * 2**20}}, 1),
        ({"shardSizeMb": 1, "source": {"bucket": "b", "key": "k", "size": 0}}, 1),  # an empty object
    ],
)
def test_shard_count_from_count_or_size_capped(spec: dict[str, Any], expected: int) -> None:
    assert jobs.shard_count(spec, OperatorSettings()) == expected


def test_a_sharded_crawljob_is_an_indexed_job_with_bounded_parallelism() -> None:
    settings = OperatorSettings(shard_parallelism=3)
    job = jobs.build_job(_crawljob(shards=5, backoffLimit=2), settings, jobs.JobFeatures(indexed=True))
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 5, 3)
    assert "backoffLimitPerIndex" not in spec and spec["backoffLimit"] == 2
    assert spec["template"]["spec"]["containers"][0]["args"][-2:] == ["--shards", "5"]
    newer = jobs.build_job(_crawljob(shards=5, backoffLimit=2), settings, jobs.JobFeatures(True, True))
    assert newer["spec"]["backoffLimitPerIndex"] == 2 and newer["spec"]["backoffLimit"] == 15


def test_without_indexed_jobs_a_sharded_crawljob_is_one_job_per_shard() -> None:
    old_server = jobs.JobFeatures(indexed=False)
    assert jobs.per_shard_jobs(_crawljob(shards=5)["spec"], SETTINGS, old_server) == 5
    assert jobs.per_shard_jobs(_crawljob()["spec"], SETTINGS, old_server) == 0  # one shard: one Job
    assert jobs.per_shard_jobs(_crawljob(shards=5)["spec"], SETTINGS, jobs.JobFeatures(True)) == 0  # Indexed
    body = _crawljob(shards=5, backoffLimit=2)
    body["status"] = {"run": 2}
    job = jobs.build_shard_job(body, SETTINGS, 3, 5)
    metadata, spec = job["metadata"], job["spec"]
    assert metadata["name"] == jobs.shard_job_name("data-csv-0123456789", 2, 3)
    assert metadata["labels"] == {
        "app.kubernetes.io/name": "crawljob",
        "app.kubernetes.io/managed-by": "crawljob-operator",
        "crawljob.io/crawljob": "data-csv-0123456789",
        "crawljob.io/shard": "3",
    }
    assert spec["template"]["metadata"]["labels"] == metadata["labels"]  # the pods say their shard too
    assert metadata["annotations"] == {"crawljob.io/run": "2", "crawljob.io/shards": "5"}
    assert metadata["ownerReferences"][0]["uid"] == "uid-1" and metadata["ownerReferences"][0]["controller"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 2)
    assert "completionMode" not in spec
    assert "ttlSecondsAfterFinished" not in spec  # a finished shard's Job stays while the others run
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--shards", "5", "--shard-index", "3"]
    assert args[:-4] == jobs.worker_args(body["spec"], "data-csv-0123456789", SETTINGS, jobs.run_id(body))
    assert "--run-id" in args  # the same id for every shard of the run
    parsed = Job.parse(job)
    assert (parsed.run, parsed.shard, parsed.shards) == (2, 3, 5)
    with pytest.raises(ValueError, match="shard index 5"):
        jobs.build_shard_job(body, SETTINGS, 5, 5)


@pytest.mark.parametrize(
    ("spec", "warned"),
    [
        ({"shardSizeMb": 64}, True),  # no size: one shard, said
        ({"shardSizeMb": 64, "source": {"bucket": "b", "key": "k"}}, True),
        ({"shardSizeMb": 64, "source": {"size": 10}}, False),  # its size says one shard
        ({"shardSizeMb": 64, "source": {"size": 0}}, False),  # an empty object
        ({"shardSizeMb": 64, "shards": 1}, False),  # spec.shards wins
        ({}, False),
    ],
)
def test_a_shard_size_without_the_objects_size_is_said(spec: dict[str, Any], warned: bool) -> None:
    assert (jobs.unknown_size(spec) is not None) == warned
    assert jobs.shard_count(spec, SETTINGS) == 1


def test_shards_reported_by_this_runs_workers_had_their_job_made() -> None:
    body = _crawljob(shards=4)
    body["status"] = {"run": 2}
    assert jobs.reported_shards(body) == set()
    entry = {"runId": "uid-1-2", "bytesRead": 1}
    body["status"]["progress"] = {
        "shards": {
            "0": entry,
            "3": entry,
            "1": {**entry, "runId": "uid-1-1"},
            "x": entry,
            "-1": entry,
            "2": 7,
        }
    }
    assert jobs.reported_shards(body) == {0, 3}  # this run's, well-formed entries only
    body["status"]["progress"] = {"shards": ["0"]}
    assert jobs.reported_shards(body) == set()


def test_a_per_shard_runs_jobs_share_one_deadline_counted_from_its_first_job() -> None:
    import datetime

    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    later = start + datetime.timedelta(seconds=41.5)
    assert jobs.deadline_left(None, start, later) is None  # no deadline
    assert jobs.deadline_left(60, None, later) == 60  # nothing made yet: the whole deadline
    assert jobs.deadline_left(60, start, later) == 18  # rounded down: never past the deadline
    assert jobs.deadline_left(60, start, start + datetime.timedelta(seconds=59.9)) == 0
    assert jobs.deadline_left(60, start, start + datetime.timedelta(hours=1)) == 0
    assert jobs.deadline_left(60, later, start) == 60  # a creation time ahead of our clock: never more
    assert jobs.crawl_deadline({"activeDeadlineSeconds": 90}, SETTINGS) == 90
    assert jobs.crawl_deadline({}, SETTINGS) is None
    defaults = OperatorSettings(worker_image="w", active_deadline_seconds=600)
    assert jobs.crawl_deadline({}, defaults) == 600
    body = _crawljob(shards=3, activeDeadlineSeconds=60)
    first = jobs.build_shard_job(body, SETTINGS, 0, 3, deadline=60)
    next_one = jobs.build_shard_job(body, SETTINGS, 1, 3, deadline=18)
    assert (first["spec"]["activeDeadlineSeconds"], next_one["spec"]["activeDeadlineSeconds"]) == (60, 18)
    assert next_one["metadata"]["annotations"]["crawljob.io/deadline"] == "60"
    assert Job.parse(next_one).status.active_deadline_seconds == 60  # what a DeadlineExceeded names
    with pytest.raises(ValueError, match="deadline has passed"):
        jobs.build_shard_job(body, SETTINGS, 2, 3, deadline=0)
    no_deadline = jobs.build_shard_job(_crawljob(shards=3), SETTINGS, 1, 3)
    assert "activeDeadlineSeconds" not in no_deadline["spec"]
    assert "crawljob.io/deadline" not in no_deadline["metadata"]["annotations"]


def test_shard_job_names_are_deterministic_distinct_and_fit_the_job_name_label() -> None:
    from crawljob import resource

    generated = resource.crawljob_name(resource.ObjectRef("bucket", "x" * 300 + ".csv", etag="e"))
    assert len(generated) == resource.MAX_NAME_LENGTH
    names = [generated, "a", "data.v2.csv", "z" * 253, "z" * 253 + "-", "z" * 252 + "y"]
    made = {
        (name, run, index): jobs.shard_job_name(name, run, index)
        for name in names
        for run in (1, 2, 10)
        for index in (0, 1, 7, jobs.MAX_SHARD_INDEXES - 1)
    }
    assert len(set(made.values())) == len(made)  # no two CrawlJobs, runs or shards share a Job
    for (name, run, index), job_name in made.items():
        assert len(job_name) <= 63 and resource.label_value(job_name) == job_name
        assert job_name == jobs.shard_job_name(name, run, index)  # deterministic
        assert job_name.startswith(jobs.shard_job_stem(name, run) + "-s")
        # Never the name of another CrawlJob's (or run's) only Job.
        assert job_name not in {jobs.job_name(other, r) for other in names for r in (1, 2, 10)}
    assert jobs.shard_job_name("data-csv", 1, 0).startswith("data-csv-")  # readable
    with pytest.raises(ValueError, match="outside"):
        jobs.shard_job_name("a", 1, jobs.MAX_SHARD_INDEXES)


@pytest.mark.parametrize(
    ("shards", "unfinished", "parallelism", "expected"),
    [
        (5, {}, 2, [0, 1]),  # admitted: the first ones
        (5, {0: True, 1: True}, 2, []),  # full
        (5, {0: False, 1: True}, 2, [2]),  # one finished: the next
        (5, {0: False, 1: False, 2: True, 3: True}, 8, [4]),
        (3, {0: False, 1: False, 2: False}, 2, []),  # all made
        (3, {1: True}, 2, [0]),  # the lowest missing first
    ],
)
def test_shards_start_in_index_order_under_the_parallelism(
    shards: int, unfinished: dict[int, bool], parallelism: int, expected: list[int]
) -> None:
    assert jobs.shards_to_start(shards, unfinished, parallelism) == expected


@pytest.mark.parametrize(
    ("present", "seen", "expected"),
    [
        ({0, 1, 2}, set(), []),
        ({0, 1}, set(), []),  # 2 not made yet
        ({0, 2}, set(), [1]),  # made in index order: 1 existed
        ({0, 1}, {2}, [2]),  # seen, then gone
        (set(), {0, 1}, [0, 1]),
    ],
)
def test_a_vanished_shard_job_is_told_from_one_not_made_yet(
    present: set[int], seen: set[int], expected: list[int]
) -> None:
    assert jobs.vanished_shards(3, present, seen) == expected


def test_shard_job_manifest_is_valid_against_the_kubernetes_schema() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    validate.validate(jobs.build_shard_job(_crawljob(shards=4), SETTINGS, 3, 4), "1.33", strict=True)


def test_indexed_job_manifest_is_valid_against_the_kubernetes_schema() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    job = jobs.build_job(_crawljob(shards=4), SETTINGS, jobs.JobFeatures(True, True))
    validate.validate(job, "1.33", strict=True)


@pytest.mark.parametrize(
    "key",
    [
        "reports/q1#final.csv",
        "private/salaries.txt#.csv",
        "a?b=1.csv",
        "x%23y.csv",
        "/lead.csv",
        "-dash.csv",
        "tab\there.csv",
        "new\nline.csv",
    ],
)
def test_bucket_and_key_reach_the_worker_as_separate_uninterpreted_values(key: str) -> None:
    # Finding 2: the worker used to get s3://bucket/key and urlparse dropped what follows # or ?.
    from crawljob_worker.settings import settings_from_args

    body = _crawljob()
    body["spec"]["source"]["key"] = key
    args = jobs.build_job(body, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["args"]
    location = settings_from_args(args, {}).source_location()
    assert (location.bucket, location.path) == ("in", key)
