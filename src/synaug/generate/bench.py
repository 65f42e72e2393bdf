"""Measuring a generator's speed here, and sizing a plan from it: images, device-hours, disk.

:func:`measure_rate` times a few batches of a generator at a plan's settings (prompts, seeds,
output size and channels), after one warm-up batch that pays for start-up costs, and encodes
the images as PNG as the store does, so it measures images per second and bytes per image.
``synaug bench`` writes the result as a small JSON file (by default
``~/.cache/synaug/bench.json``); :func:`estimate_plan` turns a plan and such a measurement into
the figures ``synaug plan --estimate`` prints.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synaug.data.registry import write_atomic
from synaug.errors import SynaugError
from synaug.plan.planner import SynthesisPlan

BENCH_FORMAT = 1
DEFAULT_PROMPT = "a photo of an object"
PNG_SAMPLE = 1000  # PNGs read to measure a store's bytes per image


@dataclass
class BenchResult:
    """One measurement of a generator on one machine (the contents of the bench JSON file)."""

    generator: str
    generator_id: str
    settings: dict
    device: str
    device_kind: str  # "gpu" or "cpu": what the hours of an estimate are hours of
    batch_size: int
    images: int
    seconds: float
    images_per_second: float
    png_bytes_per_image: float
    image_size: list[int]  # [height, width] of the measured images
    channels: int
    host: str
    measured_at: str

    def save(self, path: str | Path) -> Path:
        """Write the measurement as JSON, atomically."""
        path = Path(path).expanduser()
        try:
            write_atomic(path, json.dumps({"synaug_bench": BENCH_FORMAT, **asdict(self)}, indent=1) + "\n")
        except OSError as exc:
            raise SynaugError(f"cannot write {path} ({exc.strerror or exc}); choose a writable --out file.") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BenchResult":
        path = Path(path).expanduser()
        if not path.is_file():
            raise SynaugError(f"bench file {path} does not exist; measure with `synaug bench --plan PLAN --generator GENERATOR --out {path}`.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("synaug_bench") != BENCH_FORMAT:
                raise ValueError(f"format {BENCH_FORMAT} expected")
            return cls(**data)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SynaugError(f"{path} is not a synaug bench file ({exc}); measure again with `synaug bench --out {path}`.") from None


def default_bench_path() -> Path:
    """``$XDG_CACHE_HOME/synaug/bench.json`` (``~/.cache/synaug/bench.json`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "synaug" / "bench.json"


def device_name(generator) -> str:
    """The device a generator samples on: the GPU's name, or "cpu (N threads)"."""
    device = _device(generator)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def measure_rate(generator, plan: SynthesisPlan | None = None, batches: int = 2, spec: str = "") -> BenchResult:
    """Images per second of ``generator`` over ``batches`` batches (after a warm-up batch) and PNG bytes per image.

    With a plan, the prompts and seeds are those of plan items spread over all its classes,
    and images come out at the plan's size and channels; without one, a neutral prompt at the
    generator's own size. ``spec`` is recorded as the generator's name.
    """
    if batches < 1:
        raise SynaugError(f"batches={batches} must be at least 1.")
    count = generator.batch_size * batches
    prompts, seeds = _prompts_and_seeds(plan, generator.batch_size + count)
    options = {} if plan is None else {
        "negative_prompt": plan.negative_prompt, "output_size": plan.image_size, "output_channels": plan.channels,
    }
    warm = generator.batch_size
    generator.generate(prompts[:warm], seeds[:warm], **options)
    _synchronize(generator)
    started = time.perf_counter()
    output = generator.generate(prompts[warm:], seeds[warm:], **options)
    _synchronize(generator)
    seconds = time.perf_counter() - started
    images = output.images
    device = _device(generator)
    return BenchResult(
        generator=spec or generator.generator_id,
        generator_id=generator.generator_id,
        settings=generator.settings(),
        device=device_name(generator),
        device_kind="gpu" if device.type == "cuda" else "cpu",
        batch_size=generator.batch_size,
        images=count,
        seconds=seconds,
        images_per_second=count / seconds,
        png_bytes_per_image=float(np.mean([len(_png(image)) for image in images])),
        image_size=[int(images.shape[2]), int(images.shape[3])],
        channels=int(images.shape[1]),
        host=socket.gethostname(),
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


@dataclass
class PlanEstimate:
    """What a plan will cost: generation time on the measured device, and disk for the PNGs."""

    images: int
    images_per_second: float
    device: str  # where the rate was measured ("given rate" when typed in)
    device_kind: str  # "gpu", "cpu" or "device" (unknown)
    bytes_per_image: float | None
    bytes_source: str
    workers: int = 1

    @property
    def device_hours(self) -> float:
        return self.images / self.images_per_second / 3600.0

    @property
    def wall_seconds(self) -> float:
        """Time on ``workers`` devices like the measured one, assuming perfect scaling."""
        return self.images / self.images_per_second / self.workers

    @property
    def disk_bytes(self) -> float | None:
        return None if self.bytes_per_image is None else self.images * self.bytes_per_image


def estimate_plan(
    plan: SynthesisPlan,
    bench: BenchResult | None = None,
    rate: float | None = None,
    sample_store: str | Path | None = None,
    workers: int = 1,
) -> PlanEstimate:
    """The cost of ``plan`` from a measured ``bench`` or a typed-in ``rate`` (images/s, which wins).

    Bytes per image come from the PNGs already in ``sample_store``, else from ``bench``
    (scaled by pixel count when it measured another size), else the raw pixel size is used
    as an upper bound.
    """
    if rate is None and bench is None:
        raise SynaugError("no generation rate to estimate from; run `synaug bench --plan PLAN --generator GENERATOR` or pass --rate.")
    if rate is not None and not 0 < rate < math.inf:
        raise SynaugError(f"rate {rate} must be a positive finite number; give the images per second you measured.")
    if workers < 1:
        raise SynaugError(f"workers={workers} must be at least 1.")
    if rate is not None:
        speed, device, kind = float(rate), "given rate", "device"
    else:
        speed, device, kind = bench.images_per_second, bench.device, bench.device_kind
    size, source = _bytes_per_image(plan, bench, sample_store)
    return PlanEstimate(plan.total, speed, device, kind, size, source, workers)


def format_bytes(count: float) -> str:
    """``count`` bytes as "512 B", "3.4 MB", "1.2 GB" (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


# ---- helpers ---------------------------------------------------------------------------
def _device(generator) -> torch.device:
    pipeline = getattr(generator, "pipeline", None)
    return torch.device(getattr(pipeline, "device", "cpu"))


def _synchronize(generator) -> None:
    device = _device(generator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prompts_and_seeds(plan: SynthesisPlan | None, count: int) -> tuple[list[str], list[int]]:
    """Prompts and seeds of ``count`` plan items spread evenly over the plan (all classes), or a neutral prompt."""
    if plan is None or plan.total == 0:
        return [DEFAULT_PROMPT] * count, list(range(count))
    wanted = {int(p) for p in np.linspace(0, plan.total - 1, min(count, plan.total))}
    spread = [item for position, item in enumerate(plan.rows()) if position in wanted]
    items = [spread[i % len(spread)] for i in range(count)]  # a repeated item gets the seed of a later attempt
    return [item.prompt for item in items], [plan.seed_for(item, i // len(spread)) for i, item in enumerate(items)]


def _png(image: torch.Tensor) -> bytes:
    """``image`` (uint8 C x H x W) encoded as the store writes it."""
    array = image.cpu().numpy()
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0)))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _bytes_per_image(plan: SynthesisPlan, bench: BenchResult | None, sample_store) -> tuple[float | None, str]:
    """(bytes per PNG, where the figure comes from)."""
    if sample_store is not None:
        files = sorted(Path(sample_store).glob("*/*.png"))[:PNG_SAMPLE]
        if not files:
            raise SynaugError(f"{sample_store} holds no PNG images to measure; give a store with some images, or drop --sample-store.")
        return float(np.mean([f.stat().st_size for f in files])), f"mean of {len(files)} PNGs in {sample_store}"
    if bench is not None:
        measured = f"measured by synaug bench on {bench.image_size[0]}x{bench.image_size[1]}x{bench.channels} images"
        if plan.image_size is None or (list(plan.image_size) == bench.image_size and (plan.channels or 3) == bench.channels):
            return bench.png_bytes_per_image, measured
        ratio = math.prod(plan.image_size) * (plan.channels or 3) / (math.prod(bench.image_size) * bench.channels)
        return bench.png_bytes_per_image * ratio, f"{measured}, scaled by pixel count"
    if plan.image_size is None:
        return None, "unknown (the plan keeps each image's size; run synaug bench)"
    raw = math.prod(plan.image_size) * (plan.channels or 3)
    return float(raw), "upper bound: the raw pixel size; synaug bench measures the real figure"
