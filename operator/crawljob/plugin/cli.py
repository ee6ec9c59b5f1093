"""`kubectl crawljob` (the `kubectl-crawljob` command on PATH): submit, rerun and logs.

kubeconfig, context and credentials are the `kubernetes` package's (the same files and in-cluster
account kubectl uses); S3 is reached with boto3's standard AWS_* environment.

    kubectl crawljob submit s3://bucket/key        # the CrawlJob the receiver would make (HEAD for the version)
    kubectl crawljob rerun --failed --since 1h     # re-run what failed in the last hour
    kubectl crawljob logs NAME                     # the worker pod's log (also after the Job is gone)
    kubectl crawljob sweep SOURCE [--wait 60]      # sweep a CrawlSource now (the crawljob.io/sweep annotation)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crawljob import resource, sources
from crawljob.plugin import choose
from crawljob.receiver.versions import with_head

ANNOTATION_RERUN = "crawljob.io/rerun"


class PluginError(Exception):
    """A failure to report in one line (exit code 1)."""


@dataclass
class Api:
    """The kubernetes package's clients for one kubeconfig context, and its namespace."""

    client: Any
    namespace: str

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client)


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Api:
    """Load the kubeconfig (or the in-cluster account) as kubectl would."""
    from kubernetes import config

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((item for item in contexts if item["name"] == context), active)
        default_namespace = (active or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException as kubeconfig_problem:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise PluginError(f"no Kubernetes configuration: {kubeconfig_problem}") from kubeconfig_problem
        from kubernetes import client

        api_client = client.ApiClient()
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        with open(path, encoding="utf-8") as handle:  # noqa: PTH123 (the well-known in-cluster file)
            default_namespace = handle.read().strip()
    return Api(api_client, namespace or default_namespace)


def _api_error(exc: Exception) -> PluginError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or exc
    return PluginError(f"the Kubernetes API answered {status}: {reason}")


# ---- submit ----


def head_object(bucket: str, key: str) -> dict[str, Any]:
    """HeadObject with boto3's standard environment; PluginError naming what went wrong."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer: dict[str, Any] = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise PluginError(f"s3://{bucket}/{key} does not exist") from exc
        raise PluginError(
            f"cannot HEAD s3://{bucket}/{key} ({code}); --by-key names the CrawlJob without its version"
        ) from exc
    except BotoCoreError as exc:
        raise PluginError(f"cannot reach S3 for s3://{bucket}/{key}: {exc}") from exc
    return answer


def submit(api: Api, uri: str, by_key: bool) -> str:
    """Create the CrawlJob the receiver would make for *uri*; a line saying created or duplicate."""
    from kubernetes.client.exceptions import ApiException

    bucket, key = choose.parse_s3_uri(uri)
    ref = resource.ObjectRef(bucket=bucket, key=key)
    if not by_key:
        ref = with_head(ref, head_object(bucket, key))
    body = resource.crawljob_manifest(ref, api.namespace)
    name = resource.crawljob_name(ref)
    try:
        api.custom.create_namespaced_custom_object(
            resource.GROUP, resource.VERSION, api.namespace, resource.PLURAL, body
        )
    except ApiException as exc:
        if exc.status != 409:
            raise _api_error(exc) from exc
        existing = api.custom.get_namespaced_custom_object(
            resource.GROUP, resource.VERSION, api.namespace, resource.PLURAL, name
        )
        if not choose.same_object(existing, ref):
            raise PluginError(f"crawljob {name} exists for another object: not replaced") from exc
        return f"crawljob.crawljob.io/{name} unchanged (duplicate: this object version was submitted before)"
    version = (
        f" (versionId {ref.version_id})"
        if ref.version_id
        else f" (eTag {ref.etag})"
        if ref.etag
        else " (by key)"
    )
    return f"crawljob.crawljob.io/{name} created{version}"


# ---- rerun ----


def rerun(
    api: Api, names: Sequence[str], failed: bool, since: str | None, selector: str | None, dry_run: bool
) -> list[str]:
    """Annotate the chosen CrawlJobs with crawljob.io/rerun; one line per CrawlJob."""
    from kubernetes.client.exceptions import ApiException

    if failed == bool(names):
        raise choose.UsageError("rerun takes either --failed or CrawlJob names")
    window = choose.parse_duration(since) if since else None
    if failed:
        listed = api.custom.list_namespaced_custom_object(
            resource.GROUP, resource.VERSION, api.namespace, resource.PLURAL,
            label_selector=choose.failed_selector(selector),
        )  # fmt: skip
        now = datetime.datetime.now(tz=datetime.UTC)
        names = choose.failed_since(listed.get("items") or [], now, window)
    token = str(int(time.time()))
    lines = []
    for name in names:
        if not dry_run:
            patch = {"metadata": {"annotations": {ANNOTATION_RERUN: token}}}
            try:
                api.custom.patch_namespaced_custom_object(
                    resource.GROUP, resource.VERSION, api.namespace, resource.PLURAL, name, patch
                )
            except ApiException as exc:
                raise _api_error(exc) from exc
        lines.append(f"crawljob.crawljob.io/{name} rerun {'(dry run)' if dry_run else 'requested'}")
    return lines or ["no CrawlJob to re-run"]


# ---- logs ----


def logs(api: Api, name: str, tail: int | None) -> str:
    """The log of the CrawlJob's last worker pod (pods outlive their Job until deleted)."""
    from kubernetes.client.exceptions import ApiException

    selector = f"{resource.LABEL_CRAWLJOB}={name}"
    try:
        # Raw JSON, not the client's strict models: a pod status missing a field the models
        # require (imageID before the image is pulled) must not hide the log.
        answer = api.core.list_namespaced_pod(api.namespace, label_selector=selector, _preload_content=False)
    except ApiException as exc:
        raise _api_error(exc) from exc
    pod = choose.latest_pod(json.loads(answer.data).get("items") or [])
    if pod is None:
        raise PluginError(
            f"no worker pod of crawljob {name} is retained in namespace {api.namespace} (not started yet, "
            "or its Job and pods were deleted: see the operator's --job-ttl-seconds)"
        )
    pod_name = str(pod["metadata"]["name"])
    try:
        text: str = api.core.read_namespaced_pod_log(
            pod_name, api.namespace, container="worker", tail_lines=tail
        )
    except ApiException as exc:
        raise _api_error(exc) from exc
    return text


# ---- sweep ----


def sweep(api: Api, name: str, wait: float, poll_seconds: float = 0.5) -> str:
    """Ask the operator to sweep CrawlSource *name* now; with *wait*, until it reports that sweep."""
    from kubernetes.client.exceptions import ApiException

    token = f"{int(time.time())}-{os.getpid()}"
    patch = {"metadata": {"annotations": {sources.ANNOTATION_SWEEP: token}}}
    try:
        api.custom.patch_namespaced_custom_object(
            resource.GROUP, resource.VERSION, api.namespace, sources.PLURAL, name, patch
        )
    except ApiException as exc:
        if exc.status == 404:
            raise PluginError(f"crawlsource {name} not found in namespace {api.namespace}") from exc
        raise _api_error(exc) from exc
    if wait <= 0:
        return f"crawlsource.crawljob.io/{name} sweep requested"
    deadline = time.monotonic() + wait
    while True:
        try:
            body = api.custom.get_namespaced_custom_object(
                resource.GROUP, resource.VERSION, api.namespace, sources.PLURAL, name
            )
        except ApiException as exc:
            raise _api_error(exc) from exc
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict) and status.get("sweepToken") == token:
            return (
                f"crawlsource.crawljob.io/{name} swept: {status.get('objectsListed', 0)} objects listed, "
                f"{status.get('objectsMatched', 0)} matched, {status.get('crawljobsCreated', 0)} CrawlJobs created"
            )
        if time.monotonic() >= deadline:
            raise PluginError(
                f"crawlsource {name}: the operator did not report the sweep within {wait:g} s "
                "(is it running, and is the source suspended?)"
            )
        time.sleep(poll_seconds)


# ---- command line ----


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl crawljob",
        description="Everyday CrawlJob operations: submit an S3 object, re-run failures, read a worker's "
        "log, sweep a CrawlSource now.",
    )
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    submit_parser = verbs.add_parser(
        "submit", help="create the CrawlJob of s3://bucket/key (as the receiver names it)"
    )
    submit_parser.add_argument("uri", help="s3://bucket/key")
    submit_parser.add_argument(
        "--by-key",
        action="store_true",
        help="no HEAD: name by bucket and key only (a later upload is a duplicate)",
    )
    rerun_parser = verbs.add_parser("rerun", help="re-run CrawlJobs (the crawljob.io/rerun annotation)")
    rerun_parser.add_argument("names", nargs="*", help="CrawlJobs to re-run")
    rerun_parser.add_argument(
        "--failed", action="store_true", help="every Failed CrawlJob (label crawljob.io/phase)"
    )
    rerun_parser.add_argument(
        "--since", help="with --failed: only those that failed within this long, e.g. 1h"
    )
    rerun_parser.add_argument("-l", "--selector", help="with --failed: also match this label selector")
    rerun_parser.add_argument("--dry-run", action="store_true", help="list what would be re-run")
    logs_parser = verbs.add_parser("logs", help="the worker's log of a CrawlJob (its last attempt)")
    logs_parser.add_argument("name")
    logs_parser.add_argument("--tail", type=int, help="only the last N lines")
    sweep_parser = verbs.add_parser(
        "sweep", help="sweep a CrawlSource now (the crawljob.io/sweep annotation)"
    )
    sweep_parser.add_argument("source", help="CrawlSource name")
    sweep_parser.add_argument(
        "--wait", type=float, default=0, help="wait up to this many seconds for the sweep's result"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        api = connect(args.kubeconfig, args.context, args.namespace)
        if args.verb == "submit":
            print(submit(api, args.uri, args.by_key))
        elif args.verb == "rerun":
            print("\n".join(rerun(api, args.names, args.failed, args.since, args.selector, args.dry_run)))
        elif args.verb == "sweep":
            print(sweep(api, args.source, args.wait))
        else:
            sys.stdout.write(logs(api, args.name, args.tail))
    except (PluginError, choose.UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
