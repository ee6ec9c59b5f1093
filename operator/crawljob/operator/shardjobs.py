"""A per-shard run, on servers without Indexed Jobs: one Job per shard (`jobs.build_shard_job`).

Its Jobs as the view holds them, their creation in index order under `--shard-parallelism` (the
first ones when the CrawlJob is admitted, the next ones as shards finish), their status combined by
`status.observe_shards`, and the unfinished ones deleted when the run ends. The decisions are the
pure `jobs.shards_to_start`, `jobs.vanished_shards` and `status.observe_shards`; this is their I/O.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass

from crawljob import kube, resource
from crawljob.models import CrawlJob, Job, JobStatus, PodStatus
from crawljob.operator import jobs, status, workload
from crawljob.operator.view import RetryLater, State, log
from crawljob.operator.writes import delete_job, list_quietly, write_status
from crawljob.times import parse_time, utc_now


@dataclass
class ShardRun:
    """The current run of a CrawlJob as one Job per shard."""

    shards: int
    stem: str  # status.jobName of the run; its Jobs are `<stem>-s<index>`
    jobs: dict[int, Job]  # shard index → its Job, for the shards whose Job is in view
    seen: frozenset[int]  # shards whose Job was made: seen by this process, or reported by its worker

    def name(self, index: int) -> str:
        return f"{self.stem}-s{index}"

    @property
    def finished(self) -> bool:
        """Whether the run's outcome is decided: a shard failed, or every shard succeeded."""
        verdicts = [job.status for job in self.jobs.values()]
        if any(workload.failed_condition(verdict) is not None for verdict in verdicts):
            return True
        return len(verdicts) == self.shards and all(workload.job_finished(verdict) for verdict in verdicts)


def shard_run(state: State, crawljob: CrawlJob) -> ShardRun | None:
    """The CrawlJob's current run as per-shard Jobs, or None when it is (or will be) one Job.

    Per-shard when shard Jobs of the run exist, when status.jobName names the run's stem (they were
    made, and are gone), or, before anything is made, when `jobs.per_shard_jobs` says so. The shard
    count comes from the existing Jobs' annotation (a restart with another --max-shards keeps it).
    """
    namespace, name = crawljob.key
    run = crawljob.status.run
    stem = jobs.shard_job_stem(name, run)
    prefix = f"{stem}-s"
    uid = crawljob.meta.uid
    mine = [
        job
        for job in state.shard_jobs_of(namespace, name)
        if job.run == run and job.meta.name.startswith(prefix) and (not uid or job.is_owned_by(uid))
    ]
    seen = {
        index
        for key in state.shard_jobs_seen.get(crawljob.key) or ()
        if key[1].startswith(prefix) and (index := _index(key[1], prefix)) is not None
    }
    if uid:
        seen |= jobs.reported_shards(crawljob.body)
    if mine:
        shards = max(job.shards or 0 for job in mine)
    elif crawljob.status.job_name == stem or seen:
        shards = jobs.shard_count(crawljob.body.get("spec") or {}, state.settings)
    elif state.jobs.get((namespace, jobs.job_name(name, run))) is None and crawljob.status.job_name is None:
        shards = jobs.per_shard_jobs(crawljob.body.get("spec") or {}, state.settings, state.job_features)
    else:
        shards = 0
    if shards < 2:
        return None
    present = {job.shard: job for job in mine if job.shard is not None and 0 <= job.shard < shards}
    return ShardRun(shards, stem, present, frozenset(seen))


def _index(job_name: str, prefix: str) -> int | None:
    digits = job_name.removeprefix(prefix)
    return int(digits) if digits.isdigit() else None


def holds_slot(run: ShardRun, job_name: str | None) -> tuple[bool, bool]:
    """(holds a slot, waits for one) for a CrawlJob whose run is per-shard (see admission.needs_job):
    its one slot is held from its first shard Job until the run's outcome is decided."""
    if run.jobs:
        return not run.finished, False
    if job_name == run.stem or run.seen:
        return True, False  # its Jobs vanished: reconcile() fails it; count it until then
    return False, True


async def start(state: State, crawljob: CrawlJob, run: ShardRun) -> status.Observation | None:
    """Create the shard Jobs due now (`jobs.shards_to_start`); a 409 adopts a Job when it is ours
    (restart safety). Each gets what is left of the run's deadline (`jobs.deadline_left`, counted
    from the first shard Job's creation), so the whole run ends by it, as an Indexed Job would.
    The run's failure when a Job cannot be made (InvalidSpec) or its deadline has passed."""
    namespace, name = crawljob.key
    unfinished = {index: not workload.job_finished(job.status) for index, job in run.jobs.items()}
    due = jobs.shards_to_start(run.shards, unfinished, state.settings.shard_parallelism)
    deadline = jobs.crawl_deadline(crawljob.body.get("spec") or {}, state.settings)
    started = min(
        (moment for job in run.jobs.values() if (moment := parse_time(job.meta.creation_timestamp))),
        default=None,
    )
    left = jobs.deadline_left(deadline, started, datetime.datetime.now(tz=datetime.UTC))
    if due and deadline is not None and left == 0:
        return status.shard_deadline_exceeded(deadline, run.shards, len(run.jobs), utc_now())
    for index in due:
        try:
            manifest = jobs.build_shard_job(crawljob.body, state.settings, index, run.shards, deadline=left)
        except Exception as exc:  # specs.py checks what the builder reads; anything it missed fails this one
            log.exception("%s: cannot build the Job of shard %d", name, index, extra={"crawljob": name})
            problem = f"cannot build the Job of shard {index}: {type(exc).__name__}: {str(exc)[:200]}"
            return status.invalid_spec(problem, utc_now())
        job_name = manifest["metadata"]["name"]
        try:
            created = await state.client.create(kube.JOBS, namespace, manifest)
            state.metrics.jobs_created.inc()
        except kube.Conflict:
            created = await state.client.get(kube.JOBS, namespace, job_name)
            if not Job.parse(created).is_owned_by(crawljob.meta.uid):
                problem = f"a Job named {job_name} exists and is not owned by this CrawlJob; delete it"
                return status.invalid_spec(problem, utc_now())
            state.metrics.jobs_adopted.inc()
            log.info("%s: adopted existing Job %s", name, job_name, extra={"crawljob": name})
        except kube.Invalid as exc:
            return status.invalid_spec(f"the Job {job_name} was refused: {exc}", utc_now())
        state.remember_job(created)
    return None


async def reconcile_run(state: State, crawljob: CrawlJob, run: ShardRun) -> None:
    """Bring an unfinished CrawlJob's status in line with its shard Jobs and start the next shards
    (the caller holds its lock and checked it was admitted: some Job was made)."""
    namespace, name = crawljob.key
    now = utc_now()
    for index in jobs.vanished_shards(run.shards, set(run.jobs), set(run.seen)):
        job_name = run.name(index)
        try:
            found = await state.client.get(kube.JOBS, namespace, job_name)
        except kube.NotFound:
            gone = status.job_deleted(job_name, now)
            observation = dataclasses.replace(
                gone, message=status.name_shard(gone.message, index, run.shards)
            )
            await _end(state, crawljob, run, observation)
            return
        except kube.KubeError as exc:
            raise RetryLater(f"cannot read Job {job_name}: {exc}") from exc
        run.jobs[index] = state.remember_job(found)
    if not run.jobs:
        # Admitted (status.jobName is the stem) and nothing in view: the Job watch may not have caught
        # up after a restart, or they were deleted while this process was not watching. Ask the API.
        try:
            listed = await state.client.list(kube.JOBS, namespace, {resource.LABEL_CRAWLJOB: name})
        except kube.KubeError as exc:
            raise RetryLater(f"cannot list the shard Jobs of {name}: {exc}") from exc
        for body in listed:
            state.remember_job(body)
        refreshed = shard_run(state, crawljob)
        if refreshed is None or not refreshed.jobs:
            await _end(state, crawljob, run, status.shard_jobs_deleted(run.stem, run.shards, now))
            return
        run = refreshed
    observed: dict[int, tuple[JobStatus, list[PodStatus]]] = {}
    for index, job in sorted(run.jobs.items()):
        pods = state.pods_of(namespace, job.meta.name)
        if workload.job_finished(job.status) and not workload.pods_explain_verdict(job.status, pods):
            # The Job's and the Pods' watch events race: read the Pods (termination message) fresh.
            for pod in await list_quietly(state, kube.PODS, namespace, {"job-name": job.meta.name}):
                state.remember_pod(pod)
            pods = state.pods_of(namespace, job.meta.name)
        observed[index] = (job.status, pods)
    observation = status.observe_shards(run.shards, observed, now)
    if status.is_terminal(observation.phase):
        await _end(state, crawljob, run, observation)
        return
    await write_status(state, crawljob, observation, run.stem)
    ended = await start(state, crawljob, run)
    if ended is not None:
        await _end(state, crawljob, run, ended)


async def _end(state: State, crawljob: CrawlJob, run: ShardRun, observation: status.Observation) -> None:
    """Write the run's terminal status, then delete its shard Jobs still running (no work wasted, no
    slot held); the finished ones stay, with their pods' logs."""
    await write_status(state, crawljob, observation, run.stem)
    state.kick(urgent=True)
    await stop_unfinished(state, crawljob)


async def stop_unfinished(state: State, crawljob: CrawlJob) -> None:
    """Delete the unfinished shard Jobs of a finished CrawlJob's current run (retried by every reconcile)."""
    run = shard_run(state, crawljob)
    if run is None:
        return
    namespace, name = crawljob.key
    for index, job in sorted(run.jobs.items()):
        if workload.job_finished(job.status) or job.meta.deletion_timestamp:
            continue
        log.info(
            "%s: %s; deleting the Job of shard %d, still unfinished",
            name,
            crawljob.status.phase,
            index,
            extra={"crawljob": name},
        )
        await delete_job(state, namespace, job.meta.name)
        state.jobs.pop((namespace, job.meta.name), None)
