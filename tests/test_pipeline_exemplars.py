"""Exemplars in `synaug run`: the ``exemplars`` section reaches the generator, the stores (each
image's exemplar in the manifest) and the stage keys, guided FG stores included; bad settings
are one-line errors before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_generation import build_tiny_embedded, single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import error_line, stage_folders, tiny_config, tiny_fashion, write_config

from synaug.generate.store import SyntheticStore
from synaug.pipeline import parse_run_config, run_pipeline

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def run(config: dict):
    parsed = parse_run_config(config, where="tiny.yaml")
    return run_pipeline(parsed, config_name="tiny.yaml", config_text="", command="synaug run tiny.yaml", progress=False)


def stores(out: Path, stage: str) -> dict[str, SyntheticStore]:
    """The stores of ``stage`` keyed by their stage folder."""
    return {folder: SyntheticStore(out / "stages" / folder / "store") for folder in stage_folders(out).get(stage, [])}


def inputs(out: Path, folder: str) -> dict:
    return json.loads((out / "stages" / folder / "stage.json").read_text())["inputs"]


def test_img2img_exemplars_and_fg_on_them_through_a_run_config(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    generator = build_tiny_embedded(tmp_path / "generator")
    out = tmp_path / "out"
    config = tiny_config(
        out, generator={"spec": str(generator), "steps": 4, "dtype": "fp32"}, exemplars={"source": "real", "strength": 0.5},
        runs={"recipes": ["synaug", "fg"], "seeds": [0]}, feedback={"every": 1, "budgets": [0.5]},
    )
    run(config)
    unguided = stores(out, "generate")
    guided = stores(out, "generate-feedback")
    assert len(unguided) == 1 and len(guided) == 1
    (folder, store), (guided_folder, guided_store) = next(iter(unguided.items())), next(iter(guided.items()))
    assert inputs(out, folder)["exemplars"]["strength"] == 0.5 and inputs(out, guided_folder)["exemplars"]["source"] == "real"
    assert store.info["settings"]["strength"] == 0.5 and guided_store.info["settings"]["hooks"][0]["criterion"] == "entropy"
    for manifest in (store.manifest(), guided_store.manifest()):
        assert manifest["exemplar"].notna().all()
        positions = manifest["exemplar"].astype(int).to_numpy()
        assert positions.max() < 46  # positions in the 46-image long tail the run trains on
    # the guided store's exemplars are the first ones of the unguided store's (a budget plan takes a prefix)
    plain = store.manifest().set_index(["class_id", "index"])["exemplar"]
    fg = guided_store.manifest().set_index(["class_id", "index"])["exemplar"]
    assert (plain.loc[fg.index] == fg).all()

    run({**config, "exemplars": {"source": "real", "strength": 0.8}})
    assert len(stores(out, "generate")) == 2  # another strength, another store
    text_only = {**config}
    text_only.pop("exemplars")
    run({**text_only, "runs": {"recipes": ["synaug"], "seeds": [0]}})
    folders = stores(out, "generate")
    assert len(folders) == 3
    plain_folder = next(f for f in folders if "exemplars" not in inputs(out, f))
    assert folders[plain_folder].manifest()["exemplar"].isna().all()


def test_an_exemplar_conditioned_embedded_generator_through_a_run_config(tmp_path, monkeypatch):
    from fixtures_exemplar_generator import build_tiny_exemplar_embedded

    tiny_fashion(tmp_path, monkeypatch)
    generator = build_tiny_exemplar_embedded(tmp_path / "generator")
    out = tmp_path / "out"
    run(tiny_config(out, generator={"spec": str(generator), "steps": 3, "dtype": "fp32"}, exemplars={"source": "real"},
                    runs={"recipes": ["synaug"], "seeds": [0]}))
    (folder, store), = stores(out, "generate").items()
    settings = store.info["settings"]
    assert settings["strength"] == 1.0 and settings["image_condition"]["kind"] == "exemplar-conditioned"
    assert store.manifest()["exemplar"].notna().all() and inputs(out, folder)["exemplars"]["source"] == "real"


@pytest.mark.parametrize(
    "exemplars, generator, expected",
    [
        ({"source": "real", "strength": 1.5}, None, "tiny.yaml: exemplars: strength 1.5 must lie in (0, 1]"),
        ({"strength": 0.5}, None, "strength shapes how exemplars enter the images, and none are given"),
        ({"source": "photos"}, None, "exemplar source 'photos' is not known; use real"),
        ({"source": "real", "stength": 0.5}, None, "did you mean 'strength'?"),
        ({"source": "real", "ip_adapter": "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"}, "embedded",
         "exemplars.ip_adapter conditions a Stable Diffusion checkpoint on the exemplar's embedding"),
    ],
)
def test_bad_exemplar_settings_are_one_line_errors(tmp_path, capsys, exemplars, generator, expected):
    config = tiny_config(tmp_path / "out", exemplars=exemplars, **({"generator": {"spec": generator}} if generator else {}))
    path = write_config(tmp_path / "tiny.yaml", config)
    assert expected in error_line(capsys, "run", path)
    assert not (tmp_path / "out").exists()
