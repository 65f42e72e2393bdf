"""Filter and template ablation of SYNAuG on Fashion-MNIST-LT (IF 100, 1,236 real images).

Three training sets, each the long tail plus 3,764 synthetic images (every class filled to 500),
trained with the SYNAuG recipe of `synaug run` (the Fashion-MNIST recipe with Mixup, then cRT on
the real images) and scored on the official test set, per seed:

* ``plain``: the first images of every class of an over-generated store made with the ``plain``
  template set — exactly the images a plan without over-generation makes (same seeds, prompts);
* ``plain + confidence filter``: the same store's images, of which the classifier-confidence
  filter keeps the needed number per class — the most confident under the reference classifier
  trained on the reserved half only (:mod:`synaug.filters.reference`);
* ``modifier``: a store made with the ``modifier`` template set.

The stores come from the commands in BENCHMARKS.md (`synaug plan` / `synaug generate`); this
script filters (decisions written beside the store, which stays unfiltered) and trains::

    python benchmarks/filter_ablation.py --plain-x2 STORE --modifier STORE --out results.json

It prints each run, then the table of BENCHMARKS.md (mean ± std over the seeds). ``--epochs 1``
makes a quick check that the commands still work (not a figure).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from synaug.data.benchmarks import fashion_mnist_lt
from synaug.data.dataset import LabeledImages
from synaug.evaluate import evaluate
from synaug.filters import ClassifierScorer, FilterStep, fashion_mnist_reference, filter_store
from synaug.generate.store import SyntheticStore
from synaug.train import infer, recipe, retrain_classifier, train_classifier

DECISIONS = "confidence-decisions.parquet"


def training_sets(plain_x2: Path, modifier: Path | None, lt: LabeledImages, cache: Path) -> dict[str, LabeledImages]:
    """The synthetic half of each arm's training set, keyed by arm, with the filter's decisions beside the store."""
    store = SyntheticStore(plain_x2)
    needed = store.plan.keep_counts
    decisions = plain_x2.parent / f"{plain_x2.name}-{DECISIONS}"
    if not decisions.is_file():
        scorer = ClassifierScorer(fashion_mnist_reference(cache, progress=False))
        filter_store(store, [FilterStep(scorer)], out=decisions)
    load = {"class_names": lt.class_names, "in_memory": True}
    arms = {
        "plain": store.load(per_class=needed.tolist(), **load),
        "plain + confidence filter": store.load(decisions=decisions, **load),
    }
    if modifier is not None:
        arms["modifier"] = SyntheticStore(modifier).load(**load)
    return arms


def synaug_recipe(train: LabeledImages, test: LabeledImages, real_counts: np.ndarray, seed: int, epochs: int | None = None) -> dict:
    """Train with Mixup, re-train the classifier on the real images (cRT), score on ``test``."""
    settings = {"mixup_alpha": 1.0, "seed": seed, "num_workers": 0} | ({} if epochs is None else {"epochs": epochs})
    result = train_classifier(train, recipe("fashion-mnist", **settings), progress=False)
    model = retrain_classifier(result.model, train, result.normalizer, epochs=10, batch_size=128, lr=0.1, seed=seed, source="real")
    return evaluate(infer(model, test, result.normalizer), test.labels, real_counts, train.class_names, 100, 20)


def main() -> None:
    """Parse the arguments, filter, train every arm and seed, and write the metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain-x2", type=Path, required=True, help="store of the plain set over-generated 2x")
    parser.add_argument("--modifier", type=Path, help="store of the modifier set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "synaug", help="where the reference classifier is kept")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's 30; 1 for a quick check)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the per-seed metrics (rewritten after each run)")
    args = parser.parse_args()
    lt, test = fashion_mnist_lt()
    arms = training_sets(args.plain_x2, args.modifier, lt, args.cache)
    reference = ClassifierScorer(fashion_mnist_reference(args.cache, progress=False))
    results: dict = {"reference_test_top1": float((infer(reference.model, test, reference.normalizer).argmax(1).numpy() == test.labels).mean() * 100)}
    for arm, synthetic in arms.items():
        confidence = reference.score(synthetic, [""] * len(synthetic))["confidence"]
        results[arm] = {"synthetic": len(synthetic), "mean_reference_confidence": float(confidence.mean()), "seeds": {}}
        for seed in args.seeds:
            started = time.perf_counter()
            metrics = synaug_recipe(lt.concat(synthetic), test, lt.class_counts(), seed, args.epochs)
            results[arm]["seeds"][seed] = {k: metrics[k] for k in ("top1", "many", "medium", "few")} | {"seconds": time.perf_counter() - started}
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(arm, seed, results[arm]["seeds"][seed], flush=True)
    print(markdown_table(results))


def markdown_table(results: dict) -> str:
    """One row per arm: synthetic images, the reference's mean confidence, mean ± std over seeds of each accuracy (one seed: its value)."""
    lines = ["| arm | synthetic | reference confidence | top-1 | many | medium | few |", "|---|---|---|---|---|---|---|"]
    for arm, entry in results.items():
        if not isinstance(entry, dict):
            continue
        runs = list(entry["seeds"].values())
        cells = [f"{np.mean([r[k] for r in runs]):.2f}" + (f" ± {np.std([r[k] for r in runs], ddof=1):.2f}" if len(runs) > 1 else "")
                 for k in ("top1", "many", "medium", "few")]
        lines.append(f"| {arm} | {entry['synthetic']:,} | {entry['mean_reference_confidence']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
