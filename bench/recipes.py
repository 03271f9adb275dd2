"""Training recipes side by side: eval AUC and loss per recipe, several seeds, the same steps,
on the built-in synthetic set and on frame pairs cut from real photographs.

The photo set: scikit-image's sample photographs (``pip install -e '.[bench]'``, a bench-only
need), a camera panning down over each: image A a crop, image B the crop a few pixels lower
(label 1), the two reversed or B from another photo (label 0). Eval pairs come from photos
never trained on. Each run is the real trainer (its command line, in this process).

    python bench/recipes.py [--steps 300] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from trainer.data import schema  # noqa: E402
from trainer.data.write import shards  # noqa: E402

TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                "immunohistochemistry", "retina", "grass", "gravel")  # fmt: skip
EVAL_PHOTOS = ("camera", "coins", "moon", "brick")  # never trained on
RECIPES = {
    "constant Adam (default)": [],
    "warmup+cosine AdamW": ["--lr_schedule=cosine", "--warmup_steps=30", "--optimizer=adamw",
                            "--weight_decay=1e-4", "--learning_rate=3e-3"],
    "warmup+cosine AdamW+EMA": ["--lr_schedule=cosine", "--warmup_steps=30", "--optimizer=adamw",
                                "--weight_decay=1e-4", "--learning_rate=3e-3",
                                "--ema_decay=0.95"],
}  # fmt: skip


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def _pairs(photos, n: int, size: int, rng: np.random.Generator):
    """n (image_a, image_b, label) frame pairs from ``photos``, each side ``size`` pixels."""
    from trainer.data.write.image_pass import resize

    crop = 96
    for _ in range(n):
        i = int(rng.integers(len(photos)))
        photo = photos[i]
        dy, dx = int(rng.integers(crop // 8, crop // 4 + 1)), int(rng.integers(-9, 10))
        y = int(rng.integers(0, photo.shape[0] - crop - dy))
        x = int(rng.integers(max(0, -dx), photo.shape[1] - crop - max(0, dx)))
        a = photo[y : y + crop, x : x + crop]
        b = photo[y + dy : y + dy + crop, x + dx : x + dx + crop]
        roll = rng.random()
        if roll < 0.5:
            label = 1
        elif roll < 0.75:
            a, b, label = b, a, 0
        else:
            other = photos[(i + 1 + int(rng.integers(len(photos) - 1))) % len(photos)]
            y2 = int(rng.integers(0, other.shape[0] - crop))
            x2 = int(rng.integers(0, other.shape[1] - crop))
            b, label = other[y2 : y2 + crop, x2 : x2 + crop], 0
        yield np.asarray(resize(a, (size, size))), np.asarray(resize(b, (size, size))), label


def write_photo_pairs(out: str, *, num_train: int = 8192, num_eval: int = 1024, size: int = 32):
    shards.prepare_output_dir(out)
    rng = np.random.default_rng(0)
    files, counts = {}, {}
    for split, names, n in (("train", TRAIN_PHOTOS, num_train), ("eval", EVAL_PHOTOS, num_eval)):
        photos = [_photo(name) for name in names]
        records = (
            schema.encode_pair(
                shards.encode_image(a, "raw"), shards.encode_image(b, "raw"), label,
                size, size, 3, "raw", pair_id=f"photo/{split}/{k}",
            )
            for k, (a, b, label) in enumerate(_pairs(photos, n, size, rng))
        )  # fmt: skip
        files.update(shards.write_split(out, split, records, n, 4, False, f"photos {split}"))
        counts[split] = n
    schema.write_info(out, schema.DatasetInfo(size, size, 3, "raw", "", counts, files))


def run(data: str, model_dir: str, steps: int, seed: int, flags: list[str]) -> dict:
    from trainer.__main__ import run_in_process

    argv = [f"--data_dir={data}", f"--model_dir={model_dir}", f"--train_steps={steps}",
            f"--seed={seed}", f"--eval_every_steps={steps}", "--noexport", "--verbosity=-1",
            *flags]  # fmt: skip
    code = run_in_process(argv)
    if code:
        raise SystemExit(f"a run failed ({code}): {' '.join(argv)}")
    with open(os.path.join(model_dir, "eval", "last.json")) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = tempfile.mkdtemp(prefix="recipes-")
    photos = os.path.join(work, "photos")
    write_photo_pairs(photos)
    from trainer.config import default_cache_dir
    from trainer.data.write.synthetic import builtin_data_dir

    sets = {"built-in synthetic": builtin_data_dir(default_cache_dir()), "photo frames": photos}
    print(f"{args.steps} steps of 64 pairs, seeds {seeds}; eval AUC (mean) and loss (mean)")
    print(f"{'dataset':<20} {'recipe':<26} {'AUC per seed':<24} {'AUC':>6} {'loss':>7}")
    for set_name, data in sets.items():
        for name, flags in RECIPES.items():
            found = [
                run(data, os.path.join(work, f"{set_name}-{name}-{s}"), args.steps, s, flags)
                for s in seeds
            ]
            aucs = [r["auc"] for r in found]
            each = " ".join(f"{a:.3f}" for a in aucs)
            loss = np.mean([r["loss"] for r in found])
            print(f"{set_name:<20} {name:<26} {each:<24} {np.mean(aucs):>6.3f} {loss:>7.4f}")


if __name__ == "__main__":
    main()
