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

Progress is read from the store (rows written, finished or failed), which stays true across
worker restarts and re-runs. The store folder must be visible to every node at the same path
(a shared file system), as must a generator given as a local folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from synaug.errors import SynaugError
from synaug.generate.runner import GenerationSummary, generate_plan
from synaug.generate.store import STATUS_FAILED, SyntheticStore
from synaug.plan.planner import SynthesisPlan

SHARD_ATTEMPTS = 2  # a shard whose task raises (not a lost worker) is tried this often
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
    by workers that were lost later; ``retried`` counts the retries reported by finished shards."""

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

    def __init__(self, generator_spec: str, sampler: Mapping[str, Any], store_root: str):
        from synaug.generate.loading import load_generator

        self.store_root = store_root
        self.error: str | None = None
        try:
            self.generator = load_generator(generator_spec, **sampler)
        except SynaugError as exc:
            self.generator, self.error = None, str(exc)

    def describe(self) -> dict[str, Any]:
        """The generator's identity and where this worker runs."""
        import ray

        from synaug.generate.bench import device_name

        if self.error is not None:
            raise SynaugError(self.error)
        return {
            "info": WorkerInfo(os.getpid(), ray.util.get_node_ip_address(), device_name(self.generator)),
            "generator_id": self.generator.generator_id,
            "settings": self.generator.settings(),
        }

    def run_shard(self, plan: SynthesisPlan, shard_index: int, num_shards: int) -> GenerationSummary:
        """Generate what the store lacks of shard ``shard_index`` of ``num_shards``."""
        store = SyntheticStore(self.store_root)
        return generate_plan(plan, self.generator, store, progress=False, shard_index=shard_index, num_shards=num_shards, fail_if_all_failed=False)


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
    """
    # 1. Check inputs
    if shards_per_worker < 1 or max_restarts < 0 or cpus_per_worker <= 0 or poll_seconds <= 0:
        raise SynaugError("need shards_per_worker >= 1, max_restarts >= 0, cpus_per_worker > 0 and poll_seconds > 0.")
    store_root = Path(store_root).resolve()
    spec = str(Path(generator_spec).resolve()) if Path(generator_spec).exists() else generator_spec
    sampler = {key: value for key, value in (sampler or {}).items() if value is not None}

    # 2. Join (or start) the cluster and start the workers
    import ray

    started_here = _connect(address)
    try:
        count, cpus, gpus = _worker_resources(ray.cluster_resources(), num_workers, cpus_per_worker, gpus_per_worker)
        actor = ray.remote(GenerationWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=max_restarts, runtime_env=dict(runtime_env) if runtime_env else None
        )
        workers = [actor.remote(spec, sampler, str(store_root)) for _ in range(count)]
        try:
            store = SyntheticStore(store_root)
            run = _Run(plan, store, workers, count * shards_per_worker, progress, on_progress, poll_seconds, overwrite)
            return run.execute()
        finally:
            for worker in workers:
                ray.kill(worker)
    finally:
        if started_here:
            ray.shutdown()


def _connect(address: str | None) -> bool:
    """Join the cluster at ``address`` ($RAY_ADDRESS when None), or start a local one; True when we started Ray here."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    options = {"log_to_driver": True, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except ConnectionError as exc:
        raise SynaugError(
            f"cannot join the Ray cluster at {address} ({exc}); check the address, and for a cluster with token "
            "authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (`ray get-auth-token` on the head node)."
        ) from None
    return True


def _worker_resources(
    cluster: Mapping[str, float], num_workers: int | None, cpus_per_worker: float, gpus_per_worker: float | None
) -> tuple[int, float, float]:
    """(workers, CPUs each, GPUs each), checked against what the cluster has now."""
    cluster_gpus, cluster_cpus = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    gpus = (1.0 if cluster_gpus >= 1 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    capacity = int(cluster_cpus / cpus_per_worker + 1e-9)
    if gpus > 0:
        capacity = min(capacity, int(cluster_gpus / gpus + 1e-9))
    count = capacity if num_workers is None else int(num_workers)
    if count < 1 or count > capacity:
        have = f"{cluster_cpus:g} CPUs" + (f" and {cluster_gpus:g} GPUs" if gpus > 0 else "")
        each = f"{cpus_per_worker:g} CPUs" + (f" and {gpus:g} GPUs" if gpus > 0 else "")
        raise SynaugError(
            f"the Ray cluster has {have}, room for {capacity} workers of {each} each, not {count}; "
            f"ask for at most {capacity} workers or fewer CPUs per worker."
        )
    return count, cpus_per_worker, gpus


class _Run:
    """The driver's loop: hands shards to idle workers, re-queues the shards of lost workers, polls progress."""

    def __init__(
        self, plan, store: SyntheticStore, workers: list, num_shards: int, progress: bool, on_progress, poll_seconds: float, overwrite: bool
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
        self.waiting: dict[Any, tuple[str, Any, int | None]] = {}  # object ref -> (call, worker, shard)
        self.ready: dict[Any, WorkerInfo] = {}  # worker -> where it runs
        self.idle: list = []
        self.queue: deque[int] = deque()
        self.attempts: dict[int, int] = {}
        self.summaries: list[GenerationSummary] = []
        self.errors: list[str] = []
        self.ask_again: dict[Any, float] = {}  # lost worker -> when to ask whether it is back
        self.lost = 0
        self.opened_at: float | None = None  # when the store was opened; None before
        self.before = (0, 0)  # (rows, failed rows) in the store when it was opened

    def execute(self) -> RayGenerationSummary:
        import ray

        started = time.perf_counter()
        for worker in self.workers:
            self.waiting[worker.describe.remote()] = ("describe", worker, None)
        with _progress_bar(self.progress) as bar:
            task = bar.add_task("loading the generator", total=self.plan.total, rate="")
            next_poll = 0.0
            while (self.waiting or self.ask_again) and (self.opened_at is None or self.queue or self._shards_running()):
                if self.waiting:
                    refs, _ = ray.wait(list(self.waiting), num_returns=1, timeout=self.poll_seconds)
                else:  # only lost workers, to be asked again later
                    refs = []
                    time.sleep(RESTART_POLL_SECONDS)
                for ref in refs:
                    self._collect(ref)
                self._ask_lost_workers()
                self._dispatch()
                if self.opened_at is not None and time.perf_counter() >= next_poll:
                    poll_start = time.perf_counter()
                    self._poll(bar, task)
                    next_poll = time.perf_counter() + max(self.poll_seconds, 10 * (time.perf_counter() - poll_start))
            if self.opened_at is None:
                raise SynaugError(f"no Ray worker could start ({self.errors[-1]}); check the generator and the cluster's resources.")
            if self.queue or self._shards_running():
                raise SynaugError(
                    f"all {len(self.workers)} Ray workers were lost ({self.errors[-1]}); "
                    "finished images are kept: re-run the same command to resume."
                )
            self.store.compact()
            done, failed = self._poll(bar, task)
        summary = RayGenerationSummary(
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
        )
        if done < self.plan.total:
            raise SynaugError(
                f"{self.plan.total - done} of {self.plan.total} images are missing after shard errors ({self.errors[0]}); "
                "finished images are kept: fix the cause and re-run the same command to resume."
            )
        return summary

    # ---- events --------------------------------------------------------------------
    def _collect(self, ref) -> None:
        """Handle one finished call: a worker ready, a shard done, failed or lost."""
        import ray

        call, worker, shard = self.waiting.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._lost(call, worker, shard, exc)
            return
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, SynaugError):
                raise SynaugError(str(exc.cause)) from None
            if call == "describe":
                self.errors.append(f"worker dropped: {_first_line(exc.cause)}")
            else:
                self._shard_failed(worker, shard, exc.cause)
            return
        if call == "describe":
            self._worker_ready(worker, result)
        else:
            self.summaries.append(result)
            self.idle.append(worker)

    def _worker_ready(self, worker, description: dict) -> None:
        """The first ready worker tells the generator's identity: open the store and queue the work."""
        if self.opened_at is None:
            if self.overwrite:
                self.store.clear()
            self.store.open(self.plan, description["generator_id"], description["settings"])
            self.before = self._recorded()
            self._queue_pending_shards()
            self.opened_at = time.perf_counter()
        self.ready[worker] = description["info"]
        self.idle.append(worker)

    def _lost(self, call: str, worker, shard: int | None, exc: Exception) -> None:
        """A worker died or is restarting: its shard goes back to the front of the queue.

        The worker is asked again (after a second) until it answers, restarted by Ray, or is
        dead for good (out of restarts), when it is dropped.
        """
        import ray

        self.ready.pop(worker, None)
        if call == "shard":
            self.lost += 1
            self.queue.appendleft(shard)
            self.errors.append(f"worker lost: {_first_line(exc)}")
        if call == "shard" or not isinstance(exc, ray.exceptions.ActorDiedError):
            self.ask_again[worker] = time.perf_counter() + RESTART_POLL_SECONDS
        else:
            self.errors.append(f"worker dropped: {_first_line(exc)}")

    def _shard_failed(self, worker, shard: int, error: BaseException) -> None:
        """A shard's task raised: try it once more (on any worker), then give up on it."""
        self.attempts[shard] = self.attempts.get(shard, 0) + 1
        self.errors.append(f"shard {shard}: {_first_line(error)}")
        if self.attempts[shard] < SHARD_ATTEMPTS:
            self.queue.append(shard)
        self.idle.append(worker)

    # ---- helpers -------------------------------------------------------------------
    def _queue_pending_shards(self) -> None:
        """Queue the shards that still hold an item the store has not recorded."""
        done = self.store.finished_keys()
        pending = {position % self.num_shards for position, item in enumerate(self.plan.rows()) if item.key not in done}
        self.queue.extend(sorted(pending))

    def _ask_lost_workers(self) -> None:
        """Ask the lost workers whose time has come whether they are back."""
        now = time.perf_counter()
        for worker, when in list(self.ask_again.items()):
            if when <= now:
                del self.ask_again[worker]
                self.waiting[worker.describe.remote()] = ("describe", worker, None)

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            worker, shard = self.idle.pop(), self.queue.popleft()
            self.waiting[worker.run_shard.remote(self.plan_ref, shard, self.num_shards)] = ("shard", worker, shard)

    def _shards_running(self) -> bool:
        return any(call == "shard" for call, _, _ in self.waiting.values())

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
