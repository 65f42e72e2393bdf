"""The README's "Python API" scripts, run as printed except for their documented sizes, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import tiny_fashion

from synaug.generate.store import SyntheticStore

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {  # the README's sizes -> a few images and one epoch on the tiny Fashion-MNIST files
    "imbalance_factor=100, max_per_class=500": "imbalance_factor=4, max_per_class=4",
    "epochs=30": "epochs=1",
    "epochs=10": "epochs=1",
    'classifier="reference"': 'classifier="classifier/"',  # the first script's checkpoint instead of 30 epochs on 5,000 images
}


def readme_scripts() -> list[str]:
    """The ```python blocks of the README's "Python API" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def small(script: str) -> str:
    """``script`` with every documented size replaced; a size the README no longer shows fails the test."""
    for documented, quick in SMALL.items():
        if documented in script:
            script = script.replace(documented, quick)
    return script


@pytest.mark.usefixtures("single_thread_torch")
def test_the_readme_python_api_scripts_run_as_printed(tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    scripts = readme_scripts()
    assert len(scripts) == 3, "the README's Python API section shows the SYNAuG script, its FG variant and its filtered variant"
    whole = "\n".join(scripts)
    assert all(documented in whole for documented in SMALL), "a documented size changed; update SMALL with it"
    namespace: dict = {}
    exec(compile(small(scripts[0]), "README.md: Python API", "exec"), namespace)
    out = capsys.readouterr().out
    assert re.fullmatch(r"\{'top1': [\d.]+, 'many': None, 'medium': None, 'few': [\d.]+\}\n", out), out  # the tiny set has few-shot classes only
    assert namespace["balanced"].is_synthetic.sum() > 0 and (tmp_path / "classifier" / "model.safetensors").is_file()
    assert len(set(namespace["balanced"].class_counts().tolist())) == 1
    exec(compile(small(scripts[1]), "README.md: Python API (FG)", "exec"), namespace)
    assert re.fullmatch(r"FG top-1 \d+\.\d\n", capsys.readouterr().out)
    assert SyntheticStore(tmp_path / "synthetic-fg").info["settings"]["hooks"][0]["criterion"] == "entropy"
    exec(compile(small(scripts[2]), "README.md: Python API (filter)", "exec"), namespace)
    kept, top1 = capsys.readouterr().out.splitlines()
    needed = {name: int(n) for name, n in namespace["filtering"].sampling_strategy_.items() if n}
    assert kept == str({name: f"{n} of {2 * n}" for name, n in needed.items()}) and re.fullmatch(r"filtered top-1 \d+\.\d", top1)
    assert SyntheticStore(tmp_path / "synthetic-filtered").manifest()["filter_confidence"].notna().all()
