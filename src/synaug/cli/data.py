"""`synaug data ...`: describe a dataset's class balance, build long-tailed index files.

Every option can also come from a YAML file given with ``--config`` (keys are the option
names, with ``-`` or ``_``); options on the command line win over the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from synaug.cli.options import build_options, given_options
from synaug.data.benchmarks import draw_longtail
from synaug.data.describe import describe as describe_dataset
from synaug.data.describe import plot_class_histogram
from synaug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD
from synaug.data.registry import DATASET_KINDS, load_dataset, load_index, save_index
from synaug.outputs import check_writable_folder

app = typer.Typer(no_args_is_help=True, help="Inspect datasets and build long-tailed subsets.")



@dataclass
class DatasetOptions:
    """Which dataset to read (see ``synaug.data.load_dataset``)."""

    dataset: str = "fashion-mnist"
    root: Optional[str] = None
    split: str = "train"
    list_file: Optional[str] = None
    size: Optional[int] = None
    channels: Optional[int] = None

    def source(self) -> dict[str, Any]:
        """Keyword arguments for ``load_dataset``, with paths made absolute."""
        return {
            "kind": self.dataset,
            "root": None if self.root is None else str(Path(self.root).resolve()),
            "split": self.split,
            "list_file": None if self.list_file is None else str(Path(self.list_file).resolve()),
            "size": self.size,
            "channels": self.channels,
        }


@dataclass
class DescribeOptions(DatasetOptions):
    """Options of `synaug data describe`."""

    index: Optional[str] = None
    many_threshold: int = MANY_THRESHOLD
    few_threshold: int = FEW_THRESHOLD
    out: Optional[str] = None


@dataclass
class LongtailOptions(DatasetOptions):
    """Options of `synaug data longtail`."""

    imbalance_factor: float = 100.0
    max_per_class: Optional[int] = None
    profile: str = "exp"
    step_fraction: float = 0.5
    seed: int = 0
    reserve: Optional[float] = None
    out: str = "longtail-index.json"
    many_threshold: int = MANY_THRESHOLD
    few_threshold: int = FEW_THRESHOLD


_DATASET_FIELDS = [f.name for f in dataclasses.fields(DatasetOptions)]

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (keys = option names).")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help=f"One of {', '.join(DATASET_KINDS)} (default: fashion-mnist).")]
RootOpt = Annotated[Optional[str], typer.Option("--root", help="Data folder (Fashion-MNIST: else $SYNAUG_FASHION_MNIST or its default).")]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="train or test (imagefolder: the subfolder, if present) (default: train).")]
ListFileOpt = Annotated[Optional[str], typer.Option("--list-file", help="split-list file, one `relative/path.jpg label` per line.")]
SizeOpt = Annotated[Optional[int], typer.Option("--size", help="Resize file-backed images to SIZE x SIZE.")]
ChannelsOpt = Annotated[Optional[int], typer.Option("--channels", help="1 or 3 channels for file-backed images (default: 3).")]
ManyOpt = Annotated[Optional[int], typer.Option("--many-threshold", help=f"Many-shot: more than this many images (default: {MANY_THRESHOLD}).")]
FewOpt = Annotated[Optional[int], typer.Option("--few-threshold", help=f"Few-shot: fewer than this many images (default: {FEW_THRESHOLD}).")]


@app.command()
def describe(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    split: SplitOpt = None,
    list_file: ListFileOpt = None,
    size: SizeOpt = None,
    channels: ChannelsOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Describe the subset stored in this index file.")] = None,
    many_threshold: ManyOpt = None,
    few_threshold: FewOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Write a class-histogram PNG here.")] = None,
) -> None:
    """Class counts, imbalance factor and many/medium/few classes of a dataset or indexed subset."""
    given = given_options(
        config,
        dataset=dataset,
        root=root,
        split=split,
        list_file=list_file,
        size=size,
        channels=channels,
        index=index,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        out=out,
    )
    options = build_options(DescribeOptions, given, config)
    if options.out is not None:
        check_writable_folder(Path(options.out).parent)
    if options.index is not None:
        overrides = {k: getattr(options, k) for k in _DATASET_FIELDS if k in given}
        source = {"kind": overrides.pop("dataset")} if "dataset" in overrides else {}
        data = load_index(options.index).load(**source, **overrides)
        title = Path(options.index).name
    else:
        data = load_dataset(**options.source())
        title = f"{options.dataset} {options.split}"
    summary = describe_dataset(data, options.many_threshold, options.few_threshold)
    _print_summary(summary, title)
    if options.out is not None:
        plot_class_histogram(summary["class_counts"], summary["class_names"], options.out, title=f"{title}: images per class")
        Console(highlight=False).print(f"wrote the class histogram to {options.out}", markup=False)


@app.command()
def longtail(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    split: SplitOpt = None,
    list_file: ListFileOpt = None,
    size: SizeOpt = None,
    channels: ChannelsOpt = None,
    imbalance_factor: Annotated[Optional[float], typer.Option("--imbalance-factor", help="Largest / smallest class size (default: 100).")] = None,
    max_per_class: Annotated[
        Optional[int], typer.Option("--max-per-class", help="Size of the largest class (default: the smallest class available).")
    ] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="exp (LDAM) or step (default: exp).")] = None,
    step_fraction: Annotated[Optional[float], typer.Option("--step-fraction", help="step: share of classes kept at the maximum (default: 0.5).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="numpy seed of the LDAM-style draw (default: 0).")] = None,
    reserve: Annotated[
        Optional[float],
        typer.Option("--reserve", help="Fraction set aside for generator training, never drawn (default: 0.5 for fashion-mnist train, else 0)."),
    ] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Index file to write (default: longtail-index.json).")] = None,
    many_threshold: ManyOpt = None,
    few_threshold: FewOpt = None,
) -> None:
    """Build a long-tailed subset (LDAM-DRW's draw) and save it as an index file."""
    given = given_options(
        config,
        dataset=dataset,
        root=root,
        split=split,
        list_file=list_file,
        size=size,
        channels=channels,
        imbalance_factor=imbalance_factor,
        max_per_class=max_per_class,
        profile=profile,
        step_fraction=step_fraction,
        seed=seed,
        reserve=reserve,
        out=out,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
    )
    options = build_options(LongtailOptions, given, config)
    check_writable_folder(Path(options.out).parent)
    data = load_dataset(**options.source())
    indices, settings = draw_longtail(
        data, options.imbalance_factor, kind=options.dataset, split=options.split, max_per_class=options.max_per_class,
        profile=options.profile, seed=options.seed, reserve=options.reserve, step_fraction=options.step_fraction,
    )
    summary = describe_dataset(data.subset(indices), options.many_threshold, options.few_threshold)
    save_index(options.out, indices, data, options.source(), settings)
    _print_summary(summary, f"{options.dataset} {options.split}, long tail IF {options.imbalance_factor:g}")
    Console(highlight=False).print(f"wrote {len(indices)} indices to {options.out}", markup=False)





def _print_summary(summary: dict[str, Any], title: str) -> None:
    """A rich table of class, count and shot group, then the imbalance factor."""
    group_of = {cls: name for name in ("many", "medium", "few") for cls in summary[name]}
    table = Table(title=Text(f"{title}: {summary['num_images']} images, {summary['num_classes']} classes"))
    table.add_column("class", justify="right")
    table.add_column("name")
    table.add_column("count", justify="right")
    table.add_column("shot group")
    for cls, (name, count) in enumerate(zip(summary["class_names"], summary["class_counts"])):
        table.add_row(str(cls), Text(name), str(count), group_of[cls])
    console = Console(highlight=False)
    console.print(table)
    thresholds = summary["thresholds"]
    console.print(
        f"imbalance factor {summary['imbalance_factor']:.1f} (largest / smallest non-empty class); "
        f"many (> {thresholds['many']}) / medium / few (< {thresholds['few']}): "
        f"{len(summary['many'])} / {len(summary['medium'])} / {len(summary['few'])} classes"
    )
