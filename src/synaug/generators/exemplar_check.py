"""The quality gate's two exemplar figures (``synaug generator check --exemplars real``).

When each generated image comes from a real exemplar of its class, two questions join
recognisability (distances are L2 over pixels in [0, 1], medians per class):

* **Closeness** — how close do the samples stay to the real images of their class? The
  distance from each sample to its nearest real *test* image of the class, next to the same
  distance for real images that the generator never saw (the exemplar pool). A ratio near 1
  means the samples sit among the real images as closely as real images do.
* **No copying** — the distance of each sample to its own exemplar, next to the distance from
  that exemplar to its nearest *other* real image of the class in the pool, and to the distance
  between two random real images of the class. A copy would sit at distance 0; a sample no
  closer to its exemplar than the exemplar's closest real sibling varies it.
"""

from __future__ import annotations

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError


def pick_exemplars(pool: LabeledImages, labels: np.ndarray, seed: int) -> np.ndarray:
    """For each generated image (``labels``), the position of its exemplar in ``pool``: the real images of
    its class shuffled by a generator seeded with (``seed``, class), item i of the class taking the (i mod n)-th."""
    chosen = np.empty(len(labels), dtype=np.int64)
    for class_id in np.unique(labels):
        members = np.flatnonzero(pool.labels == class_id)
        if not len(members):
            raise SynaugError(
                f"no real image of class '{pool.class_names[class_id]}' to serve as exemplar in the check; "
                "give real images of every class, or check without --exemplars."
            )
        order = np.random.default_rng([int(seed), int(class_id)]).permutation(members)
        rows = np.flatnonzero(labels == class_id)
        chosen[rows] = order[np.arange(len(rows)) % len(order)]
    return chosen


def exemplar_figures(
    generated: torch.Tensor, exemplar_positions: np.ndarray, pool: LabeledImages, real_test: LabeledImages, class_id: int, seed: int
) -> dict[str, float]:
    """The closeness and no-copying figures of one class's generated images (uint8) and their exemplars' positions."""
    members = np.flatnonzero(pool.labels == class_id)
    pool_images = _flat(pool.images[torch.from_numpy(members)])
    test_images = _flat(real_test.images[torch.from_numpy(real_test.labels == class_id)])
    samples = _flat(generated)
    exemplars = _flat(pool.images[torch.from_numpy(exemplar_positions)])
    used = np.searchsorted(members, np.unique(exemplar_positions))
    to_siblings = torch.cdist(pool_images[torch.from_numpy(used)], pool_images)
    to_siblings[torch.arange(len(used)), torch.from_numpy(used)] = float("inf")  # not the exemplar itself
    rng = np.random.default_rng([int(seed), int(class_id), 1])
    first, second = rng.integers(0, len(members), (2, 4 * len(members)))
    distinct = first != second
    return {
        "closeness_generated": _median_nn(samples, test_images),
        "closeness_real": _median_nn(pool_images, test_images),
        "exemplar_distance": float((samples - exemplars).norm(dim=1).median()),
        "real_nn_distance": float(to_siblings.min(dim=1).values.median()),
        "real_pair_distance": float((pool_images[first[distinct]] - pool_images[second[distinct]]).norm(dim=1).median()),
    }


def exemplar_ratios(rows: list[dict]) -> tuple[float, float]:
    """(closeness ratio generated / real, copying ratio exemplar distance / real nearest-sibling distance),
    each the median over classes of one figure over the median of the other."""
    closeness = np.median([r["closeness_generated"] for r in rows]) / np.median([r["closeness_real"] for r in rows])
    copying = np.median([r["exemplar_distance"] for r in rows]) / np.median([r["real_nn_distance"] for r in rows])
    return float(closeness), float(copying)


def exemplar_markdown_lines(rows: list[dict], closeness: float, copying: float, max_closeness: float, min_copying: float) -> list[str]:
    """The figures' table and their two gate lines."""
    lines = [
        "",
        "| class | NN distance to real test, gen / real | sample to its exemplar | exemplar to nearest real sibling | two real images |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['class']} | {r['closeness_generated']:.2f} / {r['closeness_real']:.2f} | {r['exemplar_distance']:.2f} "
            f"| {r['real_nn_distance']:.2f} | {r['real_pair_distance']:.2f} |"
        )
    lines += [
        "",
        f"Closeness: median distance to the nearest real test image of the class, generated / unseen real = {closeness:.2f} "
        f"(gate: at most {max_closeness:g}; near 1 means as close to the real images as real images are).",
        f"No copying: median distance of a sample to its exemplar / of the exemplar to its nearest other real image = "
        f"{copying:.2f} (gate: at least {min_copying:g}; 0 would be a copy).",
    ]
    return lines


def _flat(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).float() / 255.0


def _median_nn(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 256) -> float:
    """Median over ``queries`` of the distance to the nearest ``reference`` row."""
    if not len(queries) or not len(reference):
        raise SynaugError("the closeness figure needs generated and real test images of every class.")
    best = [torch.cdist(queries[s : s + chunk], reference).min(dim=1).values for s in range(0, len(queries), chunk)]
    return float(torch.cat(best).median())
