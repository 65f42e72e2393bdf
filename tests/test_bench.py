"""`synaug bench` (measured images/s and PNG bytes) and `synaug plan --estimate` (hours and disk of a plan)."""

from __future__ import annotations

import json

import pytest

from data_writers import write_fashion_mnist
from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.generate.bench import BenchResult, estimate_plan, measure_rate
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

FAKE = "python:fake_generator:make_generator"


def bench_result(**changes) -> BenchResult:
    values = dict(
        generator="fake", generator_id="fake", settings={}, device="NVIDIA H100", device_kind="gpu", batch_size=8, images=16,
        seconds=2.0, images_per_second=8.0, png_bytes_per_image=100.0, image_size=[8, 8], channels=3, host="node1",
        measured_at="2026-01-01T00:00:00+00:00",
    )
    return BenchResult(**{**values, **changes})


def test_measure_rate_times_batches_after_a_warm_up_at_the_plans_settings(tmp_path):
    plan = make_plan([40, 10, 0, 25], ["cat", "dog", "owl", "eel"], image_size=(8, 6), channels=1, seed=5)
    generator = FakeGenerator(delay=0.05, batch_size=4)
    result = measure_rate(generator, plan, batches=3, spec=FAKE)
    # one warm-up call, then the timed batches; prompts come from every class with a synthetic image
    assert [len(call) for call in generator.calls] == [4, 4, 4, 4]
    assert result.images == 12 and result.batch_size == 4 and result.seconds >= 3 * 0.05
    assert result.images_per_second == pytest.approx(12 / result.seconds)
    assert result.image_size == [8, 6] and result.channels == 1 and result.device_kind == "cpu"
    seeds = {seed for call in generator.calls for seed in call}
    assert {item.class_id for item in plan.rows() if plan.seed_for(item) in seeds} == {1, 2, 3}  # class 0 gets none
    # PNG bytes per image match what a store of the same generator holds
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "store"), progress=False)
    stored = estimate_plan(plan, rate=1.0, sample_store=tmp_path / "store")
    assert stored.bytes_per_image == pytest.approx(result.png_bytes_per_image, rel=0.05)


def test_estimate_arithmetic_and_where_bytes_per_image_come_from():
    plan = make_plan([5, 0], ["cat", "dog"], image_size=(16, 16), channels=1)  # 5 images of 16 x 16 x 1
    cost = estimate_plan(plan, bench_result(), workers=2)
    assert (cost.images, cost.device_kind, cost.device) == (5, "gpu", "NVIDIA H100")
    assert cost.device_hours == pytest.approx(5 / 8 / 3600) and cost.wall_seconds == pytest.approx(5 / 8 / 2)
    assert cost.bytes_per_image == pytest.approx(100 * 256 / 192) and "scaled by pixel count" in cost.bytes_source
    typed = estimate_plan(plan, bench_result(), rate=0.5)  # a typed-in rate wins over the bench
    assert typed.device_kind == "device" and typed.wall_seconds == pytest.approx(10)
    raw = estimate_plan(plan, rate=1.0)
    assert raw.disk_bytes == 5 * 256 and "upper bound" in raw.bytes_source
    same_size = make_plan([5, 0], ["cat", "dog"], image_size=(8, 8), channels=3)
    assert estimate_plan(same_size, bench_result()).bytes_per_image == 100


def test_bench_then_plan_estimate_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fashion", train_per_class=20, test_per_class=2)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "--longtail", "5", "--max-per-class", "5", "--out", str(plan_file)]) == 0
    assert main(["bench", "--plan", str(plan_file), "--generator", FAKE, "--batch-size", "4", "--batches", "1"]) == 0
    out = capsys.readouterr().out
    saved = tmp_path / "cache" / "synaug" / "bench.json"
    assert f"wrote {saved}" in out.replace("\n", "")
    measured = json.loads(saved.read_text())
    assert measured["synaug_bench"] == 1 and measured["image_size"] == [28, 28] and measured["channels"] == 1

    assert main(["plan", "--longtail", "5", "--max-per-class", "5", "--out", str(plan_file), "--estimate", "--workers", "4"]) == 0
    out = capsys.readouterr().out
    hours = 28 / measured["images_per_second"] / 3600
    assert "estimate: 28 images" in out and f"{hours:.2f} CPU-hours" in out and "on 4 such devices" in out
    assert f"{28 * measured['png_bytes_per_image'] / 1000:.1f} kB of PNGs" in out


def test_estimate_without_a_rate_and_a_broken_bench_file_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fashion", train_per_class=20, test_per_class=2)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base = ["plan", "--longtail", "5", "--max-per-class", "5", "--out", str(tmp_path / "plan.json"), "--estimate"]
    assert main(base) == 2
    assert "run `synaug bench" in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()  # checked before the plan is written
    broken = tmp_path / "bench.json"
    broken.write_text('{"synaug_bench": 1, "device": "x"}')
    assert main([*base, "--bench", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a synaug bench file" in err and "Traceback" not in err


def test_estimate_never_overwrites_a_plan_and_estimates_an_existing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fashion", train_per_class=20, test_per_class=2)))
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--longtail", "5", "--max-per-class", "5", "--strategy", "fill-to", "--target", "3"]) == 0
    saved = (tmp_path / "plan.json").read_text()
    capsys.readouterr()
    assert main(["plan", "--longtail", "5", "--max-per-class", "5", "--estimate", "--rate", "1"]) == 0
    assert (tmp_path / "plan.json").read_text() == saved
    assert "not written" in capsys.readouterr().out
    # real 5/4/3/2/2/2/1/1/1/1 filled to 3: 11 synthetic images
    assert main(["plan", "--plan", "plan.json", "--estimate", "--rate", "1"]) == 0
    assert "estimate: 11 images" in capsys.readouterr().out and (tmp_path / "plan.json").read_text() == saved
    assert main(["plan", "--plan", "plan.json", "--strategy", "fill-to-max", "--estimate", "--rate", "1"]) == 2
    assert "--strategy cannot change" in capsys.readouterr().err
