"""What feedback guidance did to the synthetic images of a Fashion-MNIST-LT `synaug run`.

For the real reference images and every store of the run folder (SYNAuG's fill store, the
unguided budget stores of ``fill_budget``, the FG stores) it prints, over the few-shot classes
(fewer than 20 real training images) and over all classes:

- ``CE entropy`` / ``CE acc``: the mean predictive entropy (nats) of the run's CE model of the
  first seed (the default feedback classifier) on the images, and how many it gets right: did
  guidance raise what it maximises?
- ``oracle acc``: accuracy of a classifier trained on 500 real images per class (the generator
  check's oracle): do the images still show their class?
- ``NN dist``: median distance, in the oracle's feature space, from each image to the nearest
  real test image of its class: how far from the real data's support.
- ``spread``: mean pairwise feature distance within a class, over the real test images' one:
  diversity.

The real reference row is 500 images per class of the half of Fashion-MNIST train that the
generator was trained on (never in the long tail or the test set).

    python benchmarks/fg_diagnostics.py runs/fg-study                 # oracle cached in runs/fg-oracle
    python benchmarks/fg_diagnostics.py runs/fg-study --oracle-cache runs/check --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from synaug.data.dataset import LabeledImages
from synaug.data.fashion_mnist import load_fashion_mnist
from synaug.generate.store import SyntheticStore
from synaug.generators.check import fashion_mnist_world, train_oracles
from synaug.pipeline.ablations import budget_text
from synaug.plan.planner import SynthesisPlan
from synaug.train.checkpoint import load_checkpoint
from synaug.train.inference import extract_features, infer

FEW_THRESHOLD = 20
REFERENCE_PER_CLASS = 500


def run_stores(run: Path) -> list[tuple[str, Path, list[int] | None]]:
    """(label, store folder, images kept per class or None for all) of the run's synthetic sets:
    SYNAuG's fill store, the unguided budget controls (``fill_budget``: its first images per
    class) and the FG stores."""
    stages = run / "stages"
    records = [json.loads(f.read_text()) for f in sorted(stages.glob("generate-*/stage.json"))]
    stores = []
    for record in records:
        if record["stage"] != "generate" or record.get("store") is None:
            continue
        stores.append(("SYNAuG fill (unguided)", Path(record["store"]), None))
        for plan_file in sorted(stages.glob("plan-feedback-*/plan.json")):
            budget = json.loads((plan_file.parent / "stage.json").read_text())["inputs"]["budget"]
            if budget < 1:
                counts = SynthesisPlan.load(plan_file).class_totals()[1].tolist()
                stores.append((f"unguided, budget {budget_text(budget)} (fill_budget)", Path(record["store"]), counts))
    for record_file in sorted(stages.glob("generate-feedback-*/stage.json")):
        record = json.loads(record_file.read_text())
        if record.get("store") is None:
            continue
        feedback = record["inputs"]["feedback"]
        window = f", steps {feedback['start']:g}-{feedback['stop']:g}" if "start" in feedback else ""
        source = "cRT" if "cRT" in feedback["classifier_source"] else "CE"
        label = (
            f"FG {feedback['criterion']}, budget {budget_text(feedback['budget'])} "
            f"({feedback['path']}, every {feedback['every']}{window}, scale {feedback['scale']:g}, {source})"
        )
        stores.append((label, Path(record["store"]), None))
    return stores


def first_ce_model(run: Path, seed: int) -> Path:
    """The checkpoint of the run's CE training on the real long tail at ``seed``."""
    for record_file in sorted((run / "stages").glob("train-*/stage.json")):
        inputs = json.loads(record_file.read_text())["inputs"]
        if inputs.get("training_set") == "lt" and inputs["train"]["seed"] == seed and "group_dro" not in inputs:
            return record_file.parent / "checkpoint"
    raise SystemExit(f"{run} holds no CE training at seed {seed}; run the config with the ce recipe first.")


def describe(images: LabeledImages, classes: np.ndarray, ce, oracle, test_features: torch.Tensor, test_labels: np.ndarray) -> dict:
    """The diagnostics of ``images`` restricted to ``classes``."""
    keep = np.isin(images.labels, classes)
    images = images.subset(np.flatnonzero(keep))
    labels = images.labels
    probabilities = infer(ce[0], images, ce[1]).softmax(1)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(1)
    oracle_pred = infer(oracle.model, images, oracle.normalizer).argmax(1).numpy()
    features = extract_features(oracle.model, images, oracle.normalizer)
    nearest, spread = [], []
    for c in classes:
        mine, real = features[torch.from_numpy(labels == c)], test_features[torch.from_numpy(test_labels == c)]
        if len(mine):
            nearest.append(torch.cdist(mine, real).min(1).values)
        if len(mine) > 1 and len(real) > 1:
            spread.append(_mean_pairwise(mine) / _mean_pairwise(real))
    return {
        "images": len(images),
        "ce_entropy": float(entropy.mean()),
        "ce_accuracy": 100.0 * float((probabilities.argmax(1).numpy() == labels).mean()),
        "oracle_accuracy": 100.0 * float((oracle_pred == labels).mean()),
        "nn_distance": float(torch.cat(nearest).median()),
        "spread": float(np.mean(spread)) if spread else float("nan"),
    }


def _mean_pairwise(features: torch.Tensor) -> float:
    n = len(features)
    return float(torch.cdist(features, features).sum() / (n * (n - 1)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="output folder of a `synaug run` on Fashion-MNIST-LT")
    parser.add_argument("--oracle-cache", type=Path, default=Path("runs/fg-oracle"), help="where the oracle is trained once")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the CE model (the default feedback classifier)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--oracle-per-class", type=int, default=500, help="real images per class the oracle trains on")
    parser.add_argument("--reference-per-class", type=int, default=REFERENCE_PER_CLASS, help="real reference images per class")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    world = fashion_mnist_world(per_class=args.oracle_per_class)
    oracle, _ = train_oracles(world, args.oracle_cache, progress=False)
    model, normalizer, meta = load_checkpoint(first_ce_model(args.run, args.seed))
    ce = (model.eval(), normalizer)
    counts = np.asarray(meta["train_counts"])
    few = np.flatnonzero(counts < FEW_THRESHOLD)
    every = np.arange(len(counts))
    test = load_fashion_mnist("test")
    test_features = extract_features(oracle.model, test, oracle.normalizer)

    rng = np.random.default_rng(0)
    reserved = world.reference
    per_class = args.reference_per_class
    reference = reserved.subset(np.concatenate([rng.choice(np.flatnonzero(reserved.labels == c), per_class, replace=False) for c in every]))
    rows = [(f"real (generator's half, {per_class} per class)", reference)]
    rows += [(label, SyntheticStore(root).load(class_names=test.class_names, per_class=kept)) for label, root, kept in run_stores(args.run)]

    figures = {}
    for label, images in rows:
        figures[label] = {
            name: describe(images, classes, ce, oracle, test_features, test.labels) for name, classes in (("few", few), ("all", every))
        }
    table = Table(title=f"What guidance did ({args.run}; few = {', '.join(test.class_names[c] for c in few)})")
    for column in ("images", "few: CE entropy", "few: CE acc", "few: oracle acc", "few: NN dist", "few: spread", "all: oracle acc", "all: NN dist"):
        table.add_column(column, justify="right")
    table.add_column("store")
    for label, figure in figures.items():
        few_figure, all_figure = figure["few"], figure["all"]
        table.add_row(
            f"{all_figure['images']:,}", f"{few_figure['ce_entropy']:.3f}", f"{few_figure['ce_accuracy']:.1f}",
            f"{few_figure['oracle_accuracy']:.1f}", f"{few_figure['nn_distance']:.2f}", f"{few_figure['spread']:.2f}",
            f"{all_figure['oracle_accuracy']:.1f}", f"{all_figure['nn_distance']:.2f}", label,
        )
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
