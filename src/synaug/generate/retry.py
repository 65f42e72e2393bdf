"""The Ray driver's retry policy: which worker runs a shard next, and when a shard is given up.

Every try of a shard is recorded with the worker that made it and how it ended. A shard that
failed goes next to the worker that has tried it least (another worker whenever one is left),
so an error tied to one worker, such as a device fault, does not use up the shard's budget.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from synaug.errors import SynaugError

DONE = "done"
FAILED = "failed"  # the shard's task raised
LOST = "lost"  # the worker died while running it
UNANSWERED = "unanswered"  # the worker stopped answering; the shard stayed with it until it answered or died


@dataclass(frozen=True)
class RetryPolicy:
    """How often one shard is tried.

    Parameters
    ----------
    attempts : tries of a shard in all; failed tasks, lost workers and unanswered calls count.
    attempts_per_worker : tries of a shard on any one worker.
    """

    attempts: int = 4
    attempts_per_worker: int = 2

    def check(self) -> "RetryPolicy":
        """The policy itself, or a one-line error when a budget is below 1."""
        if not (isinstance(self.attempts, int) and isinstance(self.attempts_per_worker, int)) or min(self.attempts, self.attempts_per_worker) < 1:
            raise SynaugError(
                f"shard attempts {self.attempts} and attempts per worker {self.attempts_per_worker} must be whole numbers of at least 1."
            )
        return self


@dataclass(frozen=True)
class ShardAttempt:
    """One try of a shard: the worker (its position, from 0), how it ended, and the error, if any."""

    shard: int
    worker: int
    outcome: str
    error: str | None = None


class ShardLedger:
    """The tries of every shard, and the decisions the policy makes from them."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy.check()
        self.attempts: list[ShardAttempt] = []
        self._tries: Counter[int] = Counter()
        self._tries_on: Counter[tuple[int, int]] = Counter()

    def record(self, shard: int, worker: int, outcome: str, error: str | None = None) -> None:
        """Add one try of ``shard`` on ``worker``."""
        self.attempts.append(ShardAttempt(shard, worker, outcome, error))
        self._tries[shard] += 1
        self._tries_on[shard, worker] += 1

    def may_retry(self, shard: int, workers: Iterable[int]) -> bool:
        """Whether ``shard`` has tries left in all and on one of ``workers`` (those still alive)."""
        return self._tries[shard] < self.policy.attempts and any(self._tries_on[shard, w] < self.policy.attempts_per_worker for w in workers)

    def pick(self, shard: int, idle: Sequence[int], workers: Iterable[int]) -> int | None:
        """The idle worker to run ``shard`` now: one that tried it least of all alive ``workers``; None to wait for one."""
        counts = {worker: self._tries_on[shard, worker] for worker in workers}
        least = min(counts.values(), default=self.policy.attempts_per_worker)
        if least >= self.policy.attempts_per_worker:
            return None
        return next((worker for worker in idle if counts.get(worker) == least), None)

    def retried(self) -> list[ShardAttempt]:
        """The tries of every shard that was tried more than once or never done, in order."""
        shards = {a.shard for a in self.attempts if a.outcome != DONE} | {s for s, n in self._tries.items() if n > 1}
        return [a for a in self.attempts if a.shard in shards]


def describe_retries(attempts: Sequence[ShardAttempt]) -> list[str]:
    """One line per shard: where it was tried and how each try ended, e.g. 'shard 3: failed on worker 0 (...), done on worker 1'."""
    lines: dict[int, list[str]] = {}
    for attempt in attempts:
        cause = f" ({attempt.error})" if attempt.error else ""
        lines.setdefault(attempt.shard, []).append(f"{attempt.outcome} on worker {attempt.worker}{cause}")
    return [f"shard {shard}: {', '.join(tries)}" for shard, tries in sorted(lines.items())]
