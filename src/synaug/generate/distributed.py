"""Generating a plan on a Ray cluster: one worker per GPU (or per CPU slot), one shared store.

How the work is split. The plan is cut into many small shards (``shards_per_worker`` for each
worker; shard ``i`` of ``n`` holds plan positions ``i, i + n, ...``, the shards of
:func:`~synaug.generate.runner.generate_plan`). The driver keeps the shards in a queue and hands
the next one to whichever worker is idle, so a fast worker takes more of them and a lost worker's
shard goes back into the queue for the others (work stealing). Each worker is a Ray actor that
loads the generator once and runs ``generate_plan`` on the shards it is given, writing its own
part files into the one store. The store makes re-running a shard idempotent (finished images
are skipped, files a killed writer left are removed first), so a shard cut short by a lost worker
is simply run again, and a re-run after losing the driver finishes the plan. Ray restarts a killed
worker (``max_restarts``); it gets shards again once it has re-loaded the generator.

Why plain actors and not Ray Data: the unit of work is a shard that writes into the store, not
a stream of rows, so a queue in the driver is all the scheduling needed, and a lost worker is
handled in one place (the driver sees the actor die and re-queues its shard). Ray Data would add
a second scheduler whose retries, actor pool and backpressure we would have to configure (with
default 1-CPU actors it does not even start on a 2-core machine) without doing more.

Failures. A shard whose task raises is tried again on the worker that has tried it least, within
the budget of a :class:`~synaug.generate.retry.RetryPolicy`. A worker known dead (Ray reports
``ActorDiedError``: its process is gone) gives its shard back at once. A worker that does not
answer but may be alive (any other ``RayActorError``, such as ``ActorUnavailableError``: "the task
may or may not have been executed") keeps its shard: the driver asks it again, and only once it
answers (its calls run in order, so the shard's task has ended) or is known dead does the shard go
back into the queue. So no shard is run by two workers at once.

Progress is read from the store (rows written, finished or failed), which stays true across
worker restarts and re-runs. The store folder must be visible to every node at the same path
(a shared file system), as must a generator given as a local folder.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.ray_cluster import connect, worker_resources
from synaug.generate.retry import DONE, FAILED, LOST, UNANSWERED, RetryPolicy, ShardAttempt, ShardLedger, describe_retries
from synaug.generate.runner import GenerationSummary, generate_plan, run_settings
from synaug.generate.store import STATUS_FAILED, SyntheticStore
from synaug.plan.planner import SynthesisPlan

if TYPE_CHECKING:
    from synaug.generate.hooks import StepHook

RESTART_POLL_SECONDS = 1.0  # how often a lost worker is asked whether Ray has restarted it


@dataclass(frozen=True)
class WorkerInfo:
    """Where a worker runs: its process id, node address and device (e.g. "NVIDIA H100 80GB HBM3")."""

    pid: int
    node: str
    device: str


@dataclass
class RayProgress:
    """A snapshot of a run for ``on_progress``: plan items recorded, and the workers ready now."""

    done: int
    total: int
    images_per_second: float
    workers: list[WorkerInfo]


@dataclass
class RayGenerationSummary:
    """What a cluster run did. Counts of new rows come from the store, so they include work done
    by workers that were lost later; ``retried`` counts the images retried by finished shards;
    ``attempts`` holds every try of each shard tried more than once (see :meth:`retry_report`)."""

    planned: int
    already_done: int
    generated: int
    failed: int
    retried: int
    seconds: float  # the whole run
    startup_seconds: float  # until the first worker had loaded the generator
    num_workers: int
    workers: list[WorkerInfo]  # those ready at the end
    workers_lost: int = 0
    errors: list[str] = field(default_factory=list)  # lost workers and failed shard tasks, in order
    attempts: list[ShardAttempt] = field(default_factory=list)

    def retry_report(self) -> list[str]:
        """One line per retried shard: each try's worker and outcome."""
        return describe_retries(self.attempts)

    @property
    def images_per_second(self) -> float:
        """New images per second once the first worker was ready."""
        generating = self.seconds - self.startup_seconds
        return self.generated / generating if generating > 0 else 0.0


class GenerationWorker:
    """The Ray actor: loads the generator once, then runs shards of a plan into the store.

    A generator that cannot be loaded (a :class:`SynaugError`) is reported by :meth:`describe`
    instead of killing the actor, so the driver can show the user's error as is.
    """

    def __init__(self, generator_spec: str, sampler: Mapping[str, Any], store_root: str, guidance: tuple[list, Any] = ([], None)):
        from synaug.generate.loading import load_generator

        self.store_root = store_root
        self.hooks, self.reference_images = guidance
        self.error: str | None = None
        try:
            self.generator = load_generator(generator_spec, **sampler)
        except SynaugError as exc:
            self.generator, self.error = None, str(exc)

    def describe(self, plan: SynthesisPlan) -> dict[str, Any]:
        """The generator's identity, the settings the store records for ``plan``, and where this worker runs."""
        import ray

        from synaug.generate.bench import device_name

        if self.error is not None:
            raise SynaugError(self.error)
        return {
            "info": WorkerInfo(os.getpid(), ray.util.get_node_ip_address(), device_name(self.generator)),
            "generator_id": self.generator.generator_id,
            "settings": run_settings(plan, self.generator, self.hooks, self.reference_images),
        }

    def run_shard(self, plan: SynthesisPlan, shard_index: int, num_shards: int) -> GenerationSummary:
        """Generate what the store lacks of shard ``shard_index`` of ``num_shards``."""
        store = SyntheticStore(self.store_root)
        return generate_plan(
            plan, self.generator, store, progress=False, hooks=self.hooks, reference_images=self.reference_images,
            shard_index=shard_index, num_shards=num_shards, fail_if_all_failed=False,
        )


def generate_plan_on_ray(
    plan: SynthesisPlan,
    generator_spec: str,
    store_root: str | Path,
    *,
    address: str | None = None,
    num_workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    sampler: Mapping[str, Any] | None = None,
    shards_per_worker: int = 8,
    max_restarts: int = 3,
    runtime_env: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_progress: Callable[[RayProgress], None] | None = None,
    poll_seconds: float = 1.0,
    overwrite: bool = False,
    retry: RetryPolicy = RetryPolicy(),
    hooks: Sequence["StepHook"] = (),
    reference_images: LabeledImages | None = None,
) -> RayGenerationSummary:
    """Generate every image of ``plan`` that the store at ``store_root`` lacks, on a Ray cluster.

    Parameters
    ----------
    generator_spec : what :func:`synaug.generate.loading.load_generator` takes ("embedded", a model
        folder or hub id, "python:MODULE:FUNCTION"); ``sampler`` holds its keyword settings
        (scheduler, steps, guidance_scale, dtype, device, batch_size). Each worker loads it once.
    address : the cluster to join ("HEAD:6379", "auto", "ray://..."); None uses $RAY_ADDRESS when
        set, else starts a local cluster on this machine. When Ray is running in this process
        already, that cluster is used.
    num_workers : default: one per GPU (``gpus_per_worker`` each), else one per
        ``cpus_per_worker`` CPUs of the cluster.
    gpus_per_worker : default 1 when the cluster has GPUs, else 0.
    shards_per_worker : the plan is cut into ``num_workers * shards_per_worker`` shards; more
        shards balance better, fewer cost less (each shard reads the manifest and compacts it).
    max_restarts : how often Ray restarts each lost worker.
    runtime_env : Ray runtime environment of the workers (e.g. ``{"env_vars": {"HF_HOME": ...}}``).
    on_progress : called with a :class:`RayProgress` every ``poll_seconds`` or more (the interval
        grows with the time a poll of the store takes).
    overwrite : clear a store made by another plan or generator, once a worker has loaded the generator.
    retry : how often a shard is tried, in all and on one worker.
    hooks, reference_images : feedback guidance and exemplars, as :func:`~synaug.generate.runner.generate_plan`
        takes them; they are sent to every worker (a checkpoint or file-backed images must be readable there).
    """
    # 1. Check inputs
    if shards_per_worker < 1 or max_restarts < 0 or cpus_per_worker <= 0 or poll_seconds <= 0:
        raise SynaugError("need shards_per_worker >= 1, max_restarts >= 0, cpus_per_worker > 0 and poll_seconds > 0.")
    retry.check()
    store_root = Path(store_root).resolve()
    spec = str(Path(generator_spec).resolve()) if Path(generator_spec).exists() else generator_spec
    sampler = {key: value for key, value in (sampler or {}).items() if value is not None}

    # 2. Join (or start) the cluster and start the workers
    import ray

    started_here = connect(address)
    try:
        count, cpus, gpus = worker_resources(ray.cluster_resources(), num_workers, cpus_per_worker, gpus_per_worker)
        actor = ray.remote(GenerationWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=max_restarts, runtime_env=dict(runtime_env) if runtime_env else None
        )
        guidance = ray.put((list(hooks), reference_images))
        workers = [actor.remote(spec, sampler, str(store_root), guidance) for _ in range(count)]
        try:
            store = SyntheticStore(store_root)
            run = _Run(plan, store, workers, count * shards_per_worker, progress, on_progress, poll_seconds, overwrite, retry)
            return run.execute()
        finally:
            store.close()
            for worker in workers:
                ray.kill(worker)
    finally:
        if started_here:
            ray.shutdown()


class _Run:
    """The driver's loop: hands shards to idle workers, takes them back from failed or lost ones, polls progress.

    Workers are known by their position in ``workers``.
    """

    def __init__(
        self, plan, store: SyntheticStore, workers: list, num_shards: int, progress: bool, on_progress, poll_seconds: float,
        overwrite: bool, retry: RetryPolicy,
    ):
        import ray

        self.plan = plan
        self.plan_ref = ray.put(plan)
        self.store = store
        self.workers = workers
        self.num_shards = max(1, min(num_shards, plan.total))
        self.progress = progress
        self.on_progress = on_progress
        self.poll_seconds = poll_seconds
        self.overwrite = overwrite
        self.ledger = ShardLedger(retry)
        self.waiting: dict[Any, tuple[str, int, int | None]] = {}  # object ref -> (call, worker, shard)
        self.ready: dict[int, WorkerInfo] = {}  # worker -> where it runs
        self.idle: list[int] = []
        self.queue: deque[int] = deque()
        self.holding: dict[int, int] = {}  # worker that stopped answering -> the shard it keeps until it answers or dies
        self.silent: dict[int, WorkerInfo] = {}  # worker that stopped answering -> where it ran before
        self.dropped: set[int] = set()  # workers dead for good
        self.summaries: list[GenerationSummary] = []
        self.errors: list[str] = []
        self.ask_again: dict[int, float] = {}  # lost or silent worker -> when to ask whether it is back
        self.lost = 0
        self.opened_at: float | None = None  # when the store was opened; None before
        self.before = (0, 0)  # (rows, failed rows) in the store when it was opened

    def execute(self) -> RayGenerationSummary:
        started = time.perf_counter()
        for worker in range(len(self.workers)):
            self._call("describe", worker)
        with _progress_bar(self.progress) as bar:
            task = bar.add_task("loading the generator", total=self.plan.total, rate="")
            next_poll = 0.0
            while (self.waiting or self.ask_again) and (self.opened_at is None or self._shards_left()):
                for ref in self._wait():
                    self._collect(ref)
                self._ask_lost_workers()
                self._dispatch()
                if self.opened_at is not None and time.perf_counter() >= next_poll:
                    poll_start = time.perf_counter()
                    self._poll(bar, task)
                    next_poll = time.perf_counter() + max(self.poll_seconds, 10 * (time.perf_counter() - poll_start))
            if self.opened_at is None:
                raise SynaugError(f"no Ray worker could start ({self.errors[-1]}); check the generator and the cluster's resources.")
            if self._shards_left():
                raise SynaugError(
                    f"all {len(self.workers)} Ray workers were lost ({self.errors[-1]}); "
                    "finished images are kept: re-run the same command to resume."
                )
            self.store.compact()
            done, failed = self._poll(bar, task)
        if done < self.plan.total:
            given_up = describe_retries([a for a in self.ledger.retried() if a.outcome != DONE])
            raise SynaugError(
                f"{self.plan.total - done} of {self.plan.total} images are missing after shard errors ({'; '.join(given_up[:2])}); "
                "finished images are kept: fix the cause and re-run the same command to resume."
            )
        return RayGenerationSummary(
            planned=self.plan.total,
            already_done=self.before[0],
            generated=(done - failed) - (self.before[0] - self.before[1]),
            failed=failed - self.before[1],
            retried=sum(s.retried for s in self.summaries),
            seconds=time.perf_counter() - started,
            startup_seconds=self.opened_at - started,
            num_workers=len(self.workers),
            workers=list(self.ready.values()),
            workers_lost=self.lost,
            errors=self.errors,
            attempts=self.ledger.retried(),
        )

    # ---- calls to the workers (the seams the tests use to inject Ray's failures) -----------
    def _call(self, call: str, worker: int, shard: int | None = None) -> None:
        handle = self.workers[worker]
        ref = handle.describe.remote(self.plan_ref) if call == "describe" else handle.run_shard.remote(self.plan_ref, shard, self.num_shards)
        self.waiting[ref] = (call, worker, shard)

    def _wait(self) -> list:
        """The calls that ended within a poll interval."""
        import ray

        if not self.waiting:  # only lost workers, to be asked again later
            time.sleep(RESTART_POLL_SECONDS)
            return []
        return ray.wait(list(self.waiting), num_returns=1, timeout=self.poll_seconds)[0]

    def _result(self, ref) -> Any:
        import ray

        return ray.get(ref)

    # ---- events --------------------------------------------------------------------
    def _collect(self, ref) -> None:
        """Handle one ended call: a worker ready, a shard done, failed, lost or unanswered."""
        import ray

        call, worker, shard = self.waiting.pop(ref)
        try:
            result = self._result(ref)
        except ray.exceptions.ActorDiedError as exc:
            self._died(call, worker, shard, exc)
        except ray.exceptions.RayActorError as exc:
            self._unanswered(call, worker, shard, exc)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, SynaugError):
                raise SynaugError(str(exc.cause)) from None
            if call == "describe":
                self.errors.append(f"worker {worker} dropped: {_first_line(exc.cause)}")
                self.dropped.add(worker)
            else:
                self._shard_failed(worker, shard, exc.cause)
        else:
            if call == "describe":
                self._worker_ready(worker, result)
            else:
                self.summaries.append(result)
                self.ledger.record(shard, worker, DONE)
                self.idle.append(worker)

    def _worker_ready(self, worker: int, description: dict) -> None:
        """A worker answered. The first tells the generator's identity: open the store and queue the work.

        A worker that kept a shard while silent has ended that shard's task now (its calls run in
        order), so the shard goes back to the queue, to finish whatever it left undone.
        """
        if self.opened_at is None:
            if self.overwrite:
                self.store.clear()
            self.store.open(self.plan, description["generator_id"], description["settings"])
            self.before = self._recorded()
            self._queue_pending_shards()
            self.opened_at = time.perf_counter()
        self.ready[worker] = description["info"]
        self.idle.append(worker)
        if worker in self.holding:
            self._requeue(self.holding.pop(worker))
        silent = self.silent.pop(worker, None)
        if silent is not None and silent.pid != description["info"].pid:
            self.lost += 1  # it answers from a new process: Ray restarted it
            self.errors.append(f"worker {worker} lost: restarted by Ray (process {silent.pid} is now {description['info'].pid})")

    def _died(self, call: str, worker: int, shard: int | None, exc: Exception) -> None:
        """A worker's process is gone: its shard goes back to the front of the queue.

        A worker that died running a shard is asked again (Ray may restart it); one that died
        answering whether it is back is out of restarts, and dropped.
        """
        self.ready.pop(worker, None)
        if worker in self.holding:
            self._requeue(self.holding.pop(worker))
        if call == "shard":
            self.lost += 1
            self.errors.append(f"worker {worker} lost: {_first_line(exc)}")
            self.ledger.record(shard, worker, LOST, _first_line(exc))
            self._requeue(shard)
            self.ask_again[worker] = time.perf_counter() + RESTART_POLL_SECONDS
        else:
            self.errors.append(f"worker {worker} dropped: {_first_line(exc)}")
            self.dropped.add(worker)

    def _unanswered(self, call: str, worker: int, shard: int | None, exc: Exception) -> None:
        """A worker did not answer but may be alive: it keeps its shard, and is asked again at once."""
        if worker in self.ready:
            self.silent[worker] = self.ready.pop(worker)
        if call == "shard":
            self.errors.append(f"worker {worker} did not answer: {_first_line(exc)}")
            self.ledger.record(shard, worker, UNANSWERED, _first_line(exc))
            self.holding[worker] = shard
        self.ask_again[worker] = time.perf_counter() + (0.0 if call == "shard" else RESTART_POLL_SECONDS)

    def _shard_failed(self, worker: int, shard: int, error: BaseException) -> None:
        """A shard's task raised: try it again (on the worker that tried it least), within the budget."""
        self.errors.append(f"shard {shard} on worker {worker}: {_first_line(error)}")
        self.ledger.record(shard, worker, FAILED, _first_line(error))
        self._requeue(shard, front=False)
        self.idle.append(worker)

    # ---- helpers -------------------------------------------------------------------
    def _requeue(self, shard: int, front: bool = True) -> None:
        if self.ledger.may_retry(shard, self._alive()):
            self.queue.appendleft(shard) if front else self.queue.append(shard)

    def _alive(self) -> list[int]:
        return [worker for worker in range(len(self.workers)) if worker not in self.dropped]

    def _queue_pending_shards(self) -> None:
        """Queue the shards that still hold an item the store has not recorded."""
        done = self.store.finished_keys()
        pending = {position % self.num_shards for position, item in enumerate(self.plan.rows()) if item.key not in done}
        self.queue.extend(sorted(pending))

    def _ask_lost_workers(self) -> None:
        """Ask the lost or silent workers whose time has come whether they are back."""
        now = time.perf_counter()
        for worker, when in list(self.ask_again.items()):
            if when <= now:
                del self.ask_again[worker]
                self._call("describe", worker)

    def _dispatch(self) -> None:
        """Give each queued shard to the idle worker that tried it least; drop shards out of tries."""
        alive = self._alive()
        for shard in list(self.queue):
            if not self.idle:
                return
            if not self.ledger.may_retry(shard, alive):
                self.queue.remove(shard)
                continue
            worker = self.ledger.pick(shard, self.idle, alive)
            if worker is not None:
                self.queue.remove(shard)
                self.idle.remove(worker)
                self._call("shard", worker, shard)

    def _shards_left(self) -> bool:
        return bool(self.queue or self.holding or any(call == "shard" for call, _, _ in self.waiting.values()))

    def _poll(self, bar: Progress, task) -> tuple[int, int]:
        """Read the store's counts, update the bar and call ``on_progress``; returns (rows, failed rows)."""
        done, failed = self._recorded()
        elapsed = time.perf_counter() - self.opened_at
        rate = (done - self.before[0]) / elapsed if elapsed > 0 else 0.0
        description = f"generating on {len(self.ready)} of {len(self.workers)} workers"
        bar.update(task, description=description, completed=done, rate=f"{rate:.2f} img/s")
        if self.on_progress is not None:
            self.on_progress(RayProgress(done, self.plan.total, rate, list(self.ready.values())))
        return done, failed

    def _recorded(self) -> tuple[int, int]:
        """(rows, failed rows) in the store."""
        frame = self.store.manifest()
        return len(frame), int((frame["status"] == STATUS_FAILED).sum())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
