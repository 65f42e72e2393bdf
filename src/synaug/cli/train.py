"""`synaug train` and `synaug evaluate`: train a classifier, optionally re-train its last layer, score it.

Every option can also come from a YAML file given with ``--config``: its keys are the fields
of :class:`~synaug.train.TrainConfig` plus the data and output keys of :class:`TrainOptions`
(``-`` or ``_``); options on the command line win over the file, the file over ``recipe``.

``synaug train --out RUN`` writes::

    RUN/options.yaml                  the resolved options (re-run with --config RUN/options.yaml)
    RUN/checkpoint/                   model.safetensors + config.json
    RUN/checkpoint-crt/               the same after cRT (with --crt)
    RUN/results.json, results.md      metrics of each model on the test split
    RUN/confusion_matrix-<run>.png    one per model
    RUN/per_class_accuracy.png        per-class accuracy of the models side by side
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
import yaml
from rich.console import Console
from rich.table import Table

from synaug.cli.data import DatasetOptions
from synaug.cli.options import build_options
from synaug.config import load_yaml, to_dict
from synaug.data.benchmarks import default_reserve, draw_longtail, pool_indices
from synaug.data.dataset import LabeledImages
from synaug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD, balanced_subset
from synaug.data.registry import load_dataset, load_index, write_atomic
from synaug.errors import SynaugError
from synaug.evaluate import evaluate, plot_confusion_matrix, plot_per_class_accuracy, write_results
from synaug.generate.store import SyntheticStore
from synaug.outputs import check_writable_folder
from synaug.train import RECIPES, TrainConfig, infer, load_checkpoint, retrain_classifier, save_checkpoint, train_classifier
from synaug.train.checkpoint import checkpoint_folder, run_folder
from synaug.train.crt import SOURCES, CrtSettings
from synaug.train.distributed import is_main_process

console = Console(highlight=False)


@dataclass
class TrainOptions(TrainConfig, DatasetOptions):
    """Options of `synaug train`: the dataset, how to subset it, the TrainConfig, cRT and output.

    Training data: the ``split`` of ``dataset``, or the subset in ``index`` (an index file of
    `synaug data longtail`), or a long-tailed subset with imbalance factor ``longtail`` and
    ``max_per_class`` images in the largest class, or ``per_class`` images of every class
    (the balanced oracle). Subsets are drawn LDAM-style with ``data_seed`` from the part not
    reserved for the generator (``reserve``; default half of Fashion-MNIST train, else none).
    ``synthetic`` names a store of `synaug generate` whose finished images join the training set.
    """

    recipe: str | None = None
    synthetic: str | None = None
    index: str | None = None
    longtail: float | None = None
    max_per_class: int | None = None
    per_class: int | None = None
    reserve: float | None = None
    data_seed: int = 0
    test_split: str = "test"
    test_list_file: str | None = None
    crt: bool = False
    crt_epochs: int = CrtSettings.epochs
    crt_lr: float = CrtSettings.lr
    crt_batch_size: int = CrtSettings.batch_size
    crt_source: str = CrtSettings.source
    many_threshold: int = MANY_THRESHOLD
    few_threshold: int = FEW_THRESHOLD
    out: str | None = None

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file: TrainConfig fields plus data and output keys.")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="fashion-mnist, cifar10, cifar100, imagefolder or split-list.")]
RootOpt = Annotated[Optional[str], typer.Option("--root", help="Data folder (Fashion-MNIST: else $SYNAUG_FASHION_MNIST or its default).")]
ListFileOpt = Annotated[Optional[str], typer.Option("--list-file", help="split-list file of the training images.")]
OutOpt = Annotated[Optional[str], typer.Option("--out", help="Folder for the checkpoint(s), results and plots.")]


def register(app: typer.Typer) -> None:
    """Add `synaug train` and `synaug evaluate` to the main app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate_checkpoints)


def train(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    list_file: ListFileOpt = None,
    test_list_file: Annotated[Optional[str], typer.Option("--test-list-file", help="split-list file of the test images.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Resize file-backed images to N x N (needed when sizes differ).")] = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Train on the subset stored in this index file.")] = None,
    longtail: Annotated[Optional[float], typer.Option("--longtail", help="Train on a long-tailed subset with this IF.")] = None,
    max_per_class: Annotated[Optional[int], typer.Option("--max-per-class", help="Largest class of the long-tailed subset.")] = None,
    per_class: Annotated[Optional[int], typer.Option("--per-class", help="Train on a balanced subset of N images per class.")] = None,
    synthetic: Annotated[Optional[str], typer.Option("--synthetic", help="Add the finished images of this synthetic store.")] = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", help=f"Start from a recipe: {', '.join(RECIPES)}.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="small_resnet, resnet32, resnet50, or hf:<hub id or folder> (a pretrained transformers backbone).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    backbone_lr: Annotated[Optional[float], typer.Option("--backbone-lr", help="Peak learning rate of all but the last layer (default: --lr).")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="Resize images to N x N inside an hf: backbone.")] = None,
    mixup_alpha: Annotated[Optional[float], typer.Option("--mixup-alpha", help="Mixup Beta(a, a); 0 is off.")] = None,
    cutmix_alpha: Annotated[Optional[float], typer.Option("--cutmix-alpha", help="CutMix Beta(a, a); 0 is off.")] = None,
    domain_mixup: Annotated[
        Optional[bool], typer.Option("--domain-mixup/--no-domain-mixup", help="Mix real with synthetic images.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Training seed (weights, batches, augmentation).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda.")] = None,
    amp: Annotated[Optional[str], typer.Option("--amp", help="auto, off, bf16 or fp16.")] = None,
    tensorboard: Annotated[Optional[str], typer.Option("--tensorboard", help="Write TensorBoard event files of each epoch's loss and accuracy to this folder (needs the tensorboard extra).")] = None,
    crt: Annotated[Optional[bool], typer.Option("--crt/--no-crt", help="Also re-train the classifier class-balanced (cRT).")] = None,
    crt_source: Annotated[Optional[str], typer.Option("--crt-source", help="cRT on 'real' (default) or 'real+synthetic' images.")] = None,
    out: OutOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train a classifier, evaluate it on the test split, and save checkpoint, results and plots."""
    options = _train_options(
        config, dataset=dataset, root=root, list_file=list_file, test_list_file=test_list_file, size=size, index=index, longtail=longtail,
        max_per_class=max_per_class, per_class=per_class, synthetic=synthetic, recipe=recipe, model=model,
        epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=backbone_lr, resolution=resolution, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
        domain_mixup=domain_mixup, seed=seed, device=device, amp=amp, tensorboard=tensorboard, crt=crt, crt_source=crt_source, out=out,
    )
    folder = check_writable_folder(options.out)
    train_data, test_data, source = _training_data(options)
    console.print(
        f"training {options.model} on {len(train_data)} images ({int(train_data.is_synthetic.sum())} synthetic), "
        f"{options.epochs} epoch{'s' if options.epochs != 1 else ''}", markup=False,
    )
    result = train_classifier(train_data, options.train_config(), progress=progress)
    writer = is_main_process()  # under torchrun every rank trains (and runs cRT), rank 0 writes
    if writer:
        console.print(f"trained in {result.seconds:.1f} s", markup=False)
        write_atomic(folder / "options.yaml", yaml.safe_dump(to_dict(options), sort_keys=False))
        save_checkpoint(result, folder / "checkpoint", extra={"data": source})
    models = {"as trained": result.model}
    if options.crt:
        started = time.perf_counter()
        models["after cRT"] = retrain_classifier(
            result.model, train_data, result.normalizer, epochs=options.crt_epochs, batch_size=options.crt_batch_size,
            lr=options.crt_lr, seed=options.seed, source=options.crt_source,
        )
        crt_settings = {
            "epochs": options.crt_epochs, "lr": options.crt_lr, "batch_size": options.crt_batch_size, "source": options.crt_source,
        }
        if writer:
            console.print(f"cRT in {time.perf_counter() - started:.1f} s", markup=False)
            crt_result = dataclasses.replace(result, model=models["after cRT"])
            save_checkpoint(crt_result, folder / "checkpoint-crt", extra={"data": source, "crt": crt_settings})
    if not writer:
        return
    runs = {
        name: evaluate(
            infer(model, test_data, result.normalizer), test_data.labels, result.train_counts, result.class_names,
            options.many_threshold, options.few_threshold,
        )
        for name, model in models.items()
    }
    _write_report(runs, folder, f"{options.model} on {len(train_data)} training images")


def evaluate_checkpoints(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="`synaug train --out` folder(s), or their checkpoint folders; several are compared.")
    ],
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate on.")] = "test",
    list_file: Annotated[Optional[str], typer.Option("--list-file", help="split-list file of the images to evaluate.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Folder for results.json, results.md and the plots (required).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 500,
    many_threshold: Annotated[int, typer.Option("--many-threshold", help="Many-shot: more training images than this.")] = MANY_THRESHOLD,
    few_threshold: Annotated[int, typer.Option("--few-threshold", help="Few-shot: fewer training images than this.")] = FEW_THRESHOLD,
    groups_from: Annotated[
        Optional[Path],
        typer.Option(
            "--groups-from",
            help="Form many/medium/few from this checkpoint's training counts (e.g. the oracle on the long tail's groups).",
        ),
    ] = None,
) -> None:
    """Evaluate checkpoint(s) on a dataset split (by default the test split of their training data)."""
    folders = [checkpoint_folder(checkpoint) for checkpoint in checkpoints]
    if out is None:
        raise SynaugError("`synaug evaluate` needs --out FOLDER for results.json, results.md and the plots.")
    check_writable_folder(out)
    group_counts = None if groups_from is None else load_checkpoint(groups_from)[2]["train_counts"]
    runs: dict[str, dict[str, Any]] = {}
    for checkpoint in folders:
        model, normalizer, meta = load_checkpoint(checkpoint)
        source = dict(meta.get("data") or {})
        if dataset is None and not source:
            raise SynaugError(f"checkpoint {checkpoint} does not record its dataset; pass --dataset (and --root).")
        source.update({k: v for k, v in {"kind": dataset, "root": root, "list_file": list_file}.items() if v is not None})
        if source["kind"] == "split-list" and list_file is None:
            raise SynaugError(f"checkpoint {checkpoint} was trained on a split list; pass --list-file of the images to evaluate on.")
        data = load_dataset(**{**source, "split": split})
        _check_compatible(data, meta, checkpoint)
        logits = infer(model, data, normalizer, batch_size=batch_size)
        name = _unique(_label(checkpoint), runs)
        counts = meta["train_counts"] if group_counts is None else group_counts
        runs[name] = evaluate(logits, data.labels, counts, meta["class_names"], many_threshold, few_threshold)
    _write_report(runs, Path(out), f"evaluation on the {split} split", split)


# ---- helpers ------------------------------------------------------------------------------
def _train_options(config: Path | None, **command_line: Any) -> TrainOptions:
    """The recipe's values, overridden by the YAML file, overridden by the command line."""
    given = {str(k).replace("-", "_"): v for k, v in load_yaml(config).items()} if config is not None else {}
    given.update({k: v for k, v in command_line.items() if v is not None})
    name = given.get("recipe")
    if name is not None and name not in RECIPES:
        raise SynaugError(f"unknown recipe '{name}'; choose one of {', '.join(RECIPES)}.")
    values = {**(to_dict(RECIPES[name]) if name else {}), **given}
    options = build_options(TrainOptions, values, config)
    if options.out is None:
        raise SynaugError("`synaug train` needs --out FOLDER (or `out:` in the config) for the checkpoint and results.")
    if options.crt_source not in SOURCES:
        raise SynaugError(f"unknown crt_source '{options.crt_source}'; choose one of {', '.join(SOURCES)}.")
    if sum(x is not None for x in (options.index, options.longtail, options.per_class)) > 1:
        raise SynaugError("give at most one of index, longtail and per_class; they each pick the training subset.")
    if options.max_per_class is not None and options.longtail is None:
        raise SynaugError("max_per_class applies to a long-tailed subset; also give longtail (the imbalance factor).")
    return options


def _training_data(options: TrainOptions) -> tuple[LabeledImages, LabeledImages, dict[str, Any]]:
    """(training set, test set, the load_dataset arguments of the full dataset)."""
    if options.index is not None:
        subset_index = load_index(options.index)
        overrides = {k: v for k, v in {"root": options.root, "list_file": options.list_file, "size": options.size}.items() if v is not None}
        source = {**subset_index.source, **overrides}
        train_data = subset_index.apply(load_dataset(**source))
    else:
        source = options.source()
        full = load_dataset(**source)
        train_data = full if options.longtail is None and options.per_class is None else full.subset(_subset_indices(full, options))
    if options.synthetic is not None:
        store = SyntheticStore(options.synthetic)
        store.check_complete()
        train_data = train_data.concat(store.load(class_names=train_data.class_names, in_memory=train_data.in_memory))
    test_source = {**source, "split": options.test_split}
    if options.test_list_file is not None:
        test_source["list_file"] = str(Path(options.test_list_file).resolve())
    elif source["kind"] == "split-list":
        raise SynaugError("split-list training needs the `path label` file of the test images too; pass --test-list-file FILE.")
    return train_data, load_dataset(**test_source).relabel_to(train_data.class_names, "test split"), source


def _subset_indices(full: LabeledImages, options: TrainOptions) -> np.ndarray:
    """Indices of the long-tailed or balanced subset, drawn from the pool not reserved for the generator."""
    if options.per_class is not None:
        reserve = default_reserve(options.dataset, options.split) if options.reserve is None else options.reserve
        pool = pool_indices(len(full), reserve)
        return pool[balanced_subset(full.labels[pool], options.per_class, options.data_seed, full.num_classes, class_names=full.class_names)]
    indices, _ = draw_longtail(
        full, options.longtail, kind=options.dataset, split=options.split, max_per_class=options.max_per_class,
        seed=options.data_seed, reserve=options.reserve,
    )
    return indices


def _check_compatible(data: LabeledImages, meta: dict[str, Any], checkpoint: Path) -> None:
    if list(data.class_names) != list(meta["class_names"]):
        raise SynaugError(f"the dataset's classes differ from those checkpoint {checkpoint} was trained on; evaluate on the same dataset.")
    if data.channels != meta["in_channels"]:
        raise SynaugError(
            f"the dataset has {data.channels}-channel images but checkpoint {checkpoint} expects {meta['in_channels']}; "
            "pass --dataset/--root of its data."
        )


def _label(checkpoint: Path) -> str:
    """A checkpoint's name in the report: its run folder, "<run folder> after cRT", or the folder itself."""
    run = str(run_folder(checkpoint))
    return {"checkpoint": run, "checkpoint-crt": f"{run} after cRT"}.get(checkpoint.name, str(checkpoint))


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name} ({number})", number + 1
    return candidate


def _write_report(runs: dict[str, dict[str, Any]], folder: Path, title: str, split: str = "test") -> None:
    """results.json/.md, a confusion matrix per run, the per-class comparison plot, and a table on screen."""
    write_results(runs, folder, title=title[:1].upper() + title[1:], split=split)
    for name, metrics in runs.items():
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        plot_confusion_matrix(metrics, folder / f"confusion_matrix-{slug}.png", title=f"Confusion matrix: {name}")
    plot_per_class_accuracy(runs, folder / "per_class_accuracy.png")
    table = Table(title=f"{title} (accuracy %, {next(iter(runs.values()))['num_samples']} {split} images)")
    for column in ("run", "top-1", "balanced", "many", "medium", "few"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, metrics in runs.items():
        cells = [metrics[k] for k in ("top1", "balanced_accuracy", "many", "medium", "few")]
        table.add_row(name, *("–" if v is None else f"{v:.1f}" for v in cells))
    console.print(table)
    console.print(f"wrote results and plots to {folder}", markup=False)
