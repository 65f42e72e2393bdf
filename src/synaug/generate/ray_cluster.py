"""Joining a Ray cluster and sizing the generation workers to what it has."""

from __future__ import annotations

import logging
import os
from typing import Mapping

from synaug.errors import SynaugError


# Ray lowers its workers' priority by default (niceness 15), so any normal-priority job on the machine
# starves them; a local cluster started by synaug runs its workers at the driver's priority instead.
LOCAL_CLUSTER_CONFIG = {"worker_niceness": 0}


def start_local(num_cpus: int | None = None, **options) -> None:
    """Start a local Ray cluster whose workers run at the driver's priority (see ``LOCAL_CLUSTER_CONFIG``)."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, _system_config=LOCAL_CLUSTER_CONFIG, **options)


def connect(address: str | None) -> bool:
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
            start_local(**options)
    except ConnectionError as exc:
        raise SynaugError(
            f"cannot join the Ray cluster at {address} ({exc}); check the address, and for a cluster with token "
            "authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (`ray get-auth-token` on the head node)."
        ) from None
    return True


def worker_resources(
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
