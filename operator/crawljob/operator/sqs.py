"""SQS polling of CrawlSources (`spec.sqs.queueUrl`): the I/O around the decisions in `messages`.

One task per queue, on the active replica only (started by `standby.Gate`, supervised). Each task
long-polls its queue, turns every message into CrawlJobs (the webhook's names, the source's
template and label), and deletes a message only once every CrawlJob it asks for exists: created,
or a 409 for the same object. Any other API failure leaves the message to SQS, which redelivers
it after its visibility timeout (then the creates are 409s). A malformed message is never deleted
(the queue's redrive policy moves it to a dead-letter queue) and gets a Warning Event on its
first receipt. Suspended sources are not polled.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from crawljob import kube, resource, sources
from crawljob.models import Key, Meta
from crawljob.operator import events, messages
from crawljob.operator.view import State

log = logging.getLogger("crawljob.operator")

# How often the set of queues is compared with the sources (in memory), and the pause after an
# SQS error (throttling, a queue that does not exist yet, the endpoint unreachable).
RECONCILE_SECONDS = 2.0
RETRY_SECONDS = 10.0


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


class QueueFailed(Exception):
    """SQS refused or could not be reached; *code* is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SqsClient:
    """boto3's SQS client (endpoint and credentials from the standard AWS_* environment), off the loop."""

    def __init__(self) -> None:
        self._client: Any = None

    def _sqs(self) -> Any:
        # Made on first use, inside _call: a missing region or bad configuration is then a
        # QueueReady=False status, not a crashed poller.
        if self._client is None:
            config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3})
            self._client = boto3.client("sqs", config=config)
        return self._client

    async def receive(self, queue_url: str, wait_seconds: int) -> list[dict[str, Any]]:
        answer = await self._call(
            "receive_message",
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return list(answer.get("Messages") or [])

    async def delete(self, queue_url: str, receipts: list[tuple[str, str]]) -> list[str]:
        """Delete (message id, receipt handle) pairs; the ids SQS failed to delete."""
        if not receipts:
            return []
        entries = [{"Id": str(index), "ReceiptHandle": handle} for index, (_, handle) in enumerate(receipts)]
        answer = await self._call("delete_message_batch", QueueUrl=queue_url, Entries=entries)
        return [receipts[int(item["Id"])][0] for item in answer.get("Failed") or []]

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            method = getattr(self._sqs(), operation)
            answer: dict[str, Any] = await asyncio.to_thread(method, **kwargs)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error") or {}
            raise QueueFailed(str(error.get("Code") or "Error"), str(error.get("Message") or exc)) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise QueueFailed("Unreachable", str(exc)) from exc
        return answer


class Poller:
    """Keeps one polling task per queue of `state.sources`, each creating CrawlJobs from messages."""

    def __init__(self, state: State, client: SqsClient | None = None) -> None:
        self.state = state
        self._client = client
        self.tasks: dict[tuple[Key, str], asyncio.Task[None]] = {}

    @property
    def client(self) -> SqsClient:
        if self._client is None:
            self._client = SqsClient()
        return self._client

    def wanted(self) -> dict[tuple[Key, str], sources.Source]:
        """The queues to poll now: those of valid, unsuspended sources."""
        queues: dict[tuple[Key, str], sources.Source] = {}
        for key, body in list(self.state.sources.items()):
            try:
                source = sources.source_from_body(body)
            except sources.InvalidSource:
                continue  # the sweeper reports it (InvalidSpec)
            if source.queue_url and not source.suspend:
                queues[(key, source.queue_url)] = source
        return queues

    async def run(self) -> None:
        """Forever: start the tasks of new queues, stop those of gone ones, restart crashed ones."""
        try:
            while True:
                wanted = self.wanted()
                for entry, task in list(self.tasks.items()):
                    if entry not in wanted or task.done():
                        if task.done() and not task.cancelled() and task.exception() is not None:
                            log.error(
                                "SQS poller of %s crashed (restarting)", entry[1], exc_info=task.exception()
                            )
                        task.cancel()
                        del self.tasks[entry]
                for entry in wanted:
                    if entry not in self.tasks:
                        self.tasks[entry] = asyncio.create_task(self.poll(*entry), name=f"sqs {entry[1]}")
                await asyncio.sleep(RECONCILE_SECONDS)
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            self.tasks.clear()

    async def poll(self, key: Key, queue_url: str) -> None:
        """Long-poll one queue until cancelled."""
        counters = messages.Counters.from_status(self._status(key))
        while True:
            try:
                received = await self.client.receive(queue_url, self.state.settings.sqs_wait_seconds)
            except QueueFailed as exc:
                log.warning("cannot receive from SQS queue %s (will retry): %s", queue_url, exc)
                await self.write_status(key, queue_url, counters, (exc.code, exc.message))
                await asyncio.sleep(RETRY_SECONDS)
                continue
            error = await self.handle_batch(key, queue_url, received, counters)
            await self.write_status(key, queue_url, counters, error)
            if error is not None:
                await asyncio.sleep(RETRY_SECONDS)

    async def handle_batch(
        self, key: Key, queue_url: str, received: list[dict[str, Any]], counters: messages.Counters
    ) -> tuple[str, str] | None:
        """Create the CrawlJobs of every message; delete the messages that are done. The error, if any."""
        known = [source for source in self._sources(key[0])]
        done: list[tuple[str, str]] = []
        error: tuple[str, str] | None = None
        for message in received:
            counters.received += 1
            message_id = str(message.get("MessageId"))
            decision = messages.decide(str(message.get("Body") or ""), known, key[0])
            if isinstance(decision, messages.Malformed):
                log.warning(
                    "SQS message %s of %s is malformed (left to the queue): %s",
                    message_id,
                    queue_url,
                    decision.reason,
                )
                if messages.is_first_receipt(message.get("Attributes") or {}):
                    counters.malformed += 1
                    await self.post_event(
                        key,
                        "MalformedMessage",
                        f"SQS message {message_id} is not an S3 event ({decision.reason}); "
                        "left to the queue's redrive policy",
                    )
                continue
            try:
                created = await self.create_all(key[0], decision)
            except kube.KubeError as exc:
                log.warning("SQS message %s kept for redelivery: %s", message_id, exc)
                error = ("KubernetesUnavailable", f"message {message_id} kept for redelivery: {exc}")
                continue
            counters.created += created
            done.append((message_id, str(message.get("ReceiptHandle"))))
        try:
            failed = await self.client.delete(queue_url, done)
        except QueueFailed as exc:
            log.warning(
                "cannot delete %d SQS messages (they are redelivered; their CrawlJobs exist): %s",
                len(done),
                exc,
            )
            return (exc.code, exc.message)
        counters.deleted += len(done) - len(failed)
        return error

    async def create_all(self, namespace: str, decision: messages.Accepted) -> int:
        """Create each wanted CrawlJob (409 for the same object = exists); how many were new.

        Raises kube.KubeError when one cannot be made sure of: the message must then stay.
        """
        created = 0
        for wanted in decision.wanted:
            created += await self.create(namespace, wanted)
        return created

    async def create(self, namespace: str, wanted: messages.Wanted) -> int:
        client = self.state.client
        for manifest in wanted.manifests:
            name = str(manifest["metadata"]["name"])
            try:
                body = await client.create(kube.CRAWLJOBS, namespace, manifest)
            except kube.Conflict:
                existing = await client.get(kube.CRAWLJOBS, namespace, name)
                if resource.same_object((existing.get("spec") or {}).get("source"), wanted.ref):
                    return 0
                continue  # the name is another object's: the next alternative name
            except kube.Invalid as exc:
                # The API will refuse it on every redelivery: the message is done, the cause logged.
                log.error("CrawlJob %s from SQS refused by the API: %s", name, exc)
                return 0
            self.state.remember_crawljob(body)
            return 1
        log.error("CrawlJob names of s3://%s/%s are held by other objects", wanted.ref.bucket, wanted.ref.key)
        return 0

    def _sources(self, namespace: str) -> list[sources.Source]:
        found = []
        for (space, _), body in list(self.state.sources.items()):
            if space != namespace:
                continue
            try:
                found.append(sources.source_from_body(body))
            except sources.InvalidSource:
                continue
        return found

    def _status(self, key: Key) -> Mapping[str, Any]:
        return (self.state.sources.get(key) or {}).get("status") or {}

    async def write_status(
        self, key: Key, queue_url: str, counters: messages.Counters, error: tuple[str, str] | None
    ) -> None:
        current = self._status(key)
        patch = messages.queue_status(queue_url, counters, current, utc_now(), error)
        if not messages.status_changed(current, patch):
            return
        try:
            updated = await self.state.client.patch(
                kube.CRAWLSOURCES, key[0], key[1], {"status": {"sqs": patch}}, "status"
            )
        except kube.KubeError as exc:
            log.warning("cannot write the SQS status of CrawlSource %s: %s", key[1], exc)
            return
        body = self.state.sources.get(key)
        if body is not None and updated.get("status") is not None:
            body["status"] = updated["status"]

    async def post_event(self, key: Key, reason: str, message: str) -> None:
        body = self.state.sources.get(key)
        if body is None:
            return
        meta = Meta.parse(body)
        event = events.build_event(
            meta, reason, message, True, self.state.instance, utc_now(), kind=sources.KIND, action="Poll"
        )
        try:
            await self.state.client.create(kube.EVENTS, meta.namespace, event)
        except kube.KubeError as exc:
            log.warning("cannot post event %s on CrawlSource %s: %s", reason, meta.name, exc)
