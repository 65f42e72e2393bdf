"""CPU cost per image of the exemplar routes next to plain text-to-image generation, with and without feedback guidance.

Routes, all through ``Generator.generate`` at each generator's recommended sampler settings
(the shipped ones: DPM-Solver++, 10 steps, classifier-free guidance 1.5, bf16 autocast):

* ``plain``: the shipped text-only Fashion-MNIST generator from its caption;
* ``img2img S``: the same generator from a real exemplar noised to strength S (it runs the
  last S of the steps);
* ``exemplar-conditioned``: the exemplar-conditioned generator (``embedded:fashion-mnist-exemplar``)
  from noise, the exemplar entering through its embedding;
* each again with feedback guidance (entropy, x̂0 path, every 5th step: synaug's defaults).

The exemplars are real images of the long-tailed training set (Fashion-MNIST-LT, IF 100), one
per image, of its class. Runs alternate (every route once per round, after a warm-up round;
each round starts one route later, so no route always runs first) and each ratio is the median
over rounds of route / plain within the round, so a machine busy with other work slows all alike.

    python benchmarks/exemplar_routes_cost.py                               # 128 images, 3 rounds, img2img 0.5
    python benchmarks/exemplar_routes_cost.py --threads 1 --strengths 0.3,0.5,0.8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synaug.data.benchmarks import fashion_mnist_lt
from synaug.generate.backends import EmbeddedBackend
from synaug.guidance import feedback_hook
from synaug.train import TrainConfig, train_classifier

EXEMPLAR_GENERATOR = "fashion-mnist-exemplar"


def exemplars_for(data, classes: list[int]) -> torch.Tensor:
    """One real image of each item's class, taking the class's images in turn."""
    taken = {c: 0 for c in set(classes)}
    chosen = []
    for c in classes:
        members = (torch.as_tensor(data.labels) == c).nonzero().flatten()
        chosen.append(int(members[taken[c] % len(members)]))
        taken[c] += 1
    return data.images[torch.tensor(chosen)]


def routes(args, options: dict) -> dict[str, tuple[EmbeddedBackend, bool]]:
    """name -> (generator, whether it gets exemplars)."""
    def text_only(**more) -> EmbeddedBackend:
        if args.generator is None:
            return EmbeddedBackend.default(**options, **more)
        return EmbeddedBackend.from_pretrained(args.generator, **options, **more)

    found = {"plain": (text_only(), False)}
    for strength in args.strengths:
        found[f"img2img {strength:g}"] = (text_only(strength=strength), True)
    exemplar = (EmbeddedBackend.shipped(EXEMPLAR_GENERATOR, **options) if args.exemplar_generator is None
                else EmbeddedBackend.from_pretrained(args.exemplar_generator, **options))
    found["exemplar-conditioned"] = (exemplar, True)
    return found


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images per generate call (one batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--strengths", type=lambda s: [float(v) for v in s.split(",")], default=[0.5], help="img2img strengths, e.g. 0.3,0.5")
    parser.add_argument("--generator", default=None, help="text-only generator folder (default: the shipped embedded one)")
    parser.add_argument("--exemplar-generator", default=None, help=f"exemplar-conditioned generator folder (default: embedded:{EXEMPLAR_GENERATOR})")
    parser.add_argument("--checkpoint", default=None, help="feedback classifier checkpoint (default: train one here, 3 epochs)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: each generator's)")
    parser.add_argument("--dtype", default="bf16", help="fp32 | bf16 (default: bf16, what `synaug run` picks on a CPU with native bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--imbalance-factor", type=float, default=100, help="of the long-tailed set the exemplars come from")
    parser.add_argument("--max-per-class", type=int, default=500, help="its largest class")
    parser.add_argument("--no-feedback", action="store_true", help="time the routes without feedback guidance only")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    train_data = fashion_mnist_lt(args.imbalance_factor, args.max_per_class)[0]
    options = dict(batch_size=args.images, dtype=args.dtype, steps=args.steps)
    configs = {name: (backend, exemplars, []) for name, (backend, exemplars) in routes(args, options).items()}
    if not args.no_feedback:
        classifier = args.checkpoint or train_classifier(train_data, TrainConfig(epochs=3, device="cpu", num_workers=0), progress=False)
        hook = feedback_hook("entropy", classifier, train_data)
        configs.update({f"{name} + FG": (backend, exemplars, [hook]) for name, (backend, exemplars, _) in list(configs.items())})

    names = configs["plain"][0].spec.class_names
    classes = [i % len(names) for i in range(args.images)]
    prompts = [f"a photo of a {names[c]}" for c in classes]
    references = exemplars_for(train_data, classes)
    plain = configs["plain"][0]
    print(f"{args.images} images per call, {plain.steps} {plain.scheduler_name} steps, CFG {plain.guidance_scale:g}, "
          f"{plain.pipeline.precision.name}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for round_index in range(args.repeats + 1):
        seeds = list(range(round_index * args.images, (round_index + 1) * args.images))
        order = list(configs)[round_index % len(configs):] + list(configs)[: round_index % len(configs)]
        for name in order:
            backend, exemplars, hooks = configs[name]
            started = time.perf_counter()
            backend.generate(prompts, seeds, class_ids=classes, hooks=hooks, reference_images=references if exemplars else None)
            if round_index:  # the first round warms up
                seconds[name].append(time.perf_counter() - started)
        if round_index:
            print(f"round {round_index}: " + ", ".join(f"{name} {s[-1]:.2f} s" for name, s in seconds.items()), flush=True)

    ratios = {name: statistics.median(r / p for r, p in zip(seconds[name], seconds["plain"])) for name in configs}
    print(f"\n{'route':<30} {'steps run':>9} {'ms / image':>11} {'/ plain':>8}")
    for name, (backend, exemplars, _) in configs.items():
        median = statistics.median(seconds[name])
        print(f"{name:<30} {backend.steps_run(exemplars):>9} {1000 * median / args.images:>11.1f} {ratios[name]:>8.2f}")
    return ratios


if __name__ == "__main__":
    main()
