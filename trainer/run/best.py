"""The best checkpoint as a servable model: ``<model_dir>/export_best/`` with ``best.json``.

Kept by whoever evaluates: the side-car evaluator (--mode=continuous_eval), or the training
loop's own eval when there is none. ``best.json`` sits inside the SavedModel folder (step,
metric, metrics), so the model and the figures that made it the best travel together.

Replacement: the new SavedModel is written whole beside the old one, then swapped in by two
renames (trainer.common.files.folder_written_whole: on a local disk a reader sees the old or the
new model, never a half-written one). On gs:// a folder rename copies object by object, so a
reader may briefly find the folder missing or partly copied; ``best.json`` is copied last
like every other object of the folder, and a reader that wants certainty loads
``export_best`` only when ``best.json`` is there and names the step it expects.
"""

from __future__ import annotations

import math
import time

from absl import logging

from trainer.common.files import folder_written_whole, read_json, write_json
from trainer.common.paths import join

BEST_DIR = "export_best"
BEST_FILE = "best.json"
HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "loss": False}


def is_better(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` beats ``old`` for ``metric``: strictly (a tie keeps the earlier step);
    a NaN/Inf value never wins and never stands in the way."""
    if new is None or not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new > old if HIGHER_IS_BETTER[metric] else new < old


def read_best(model_dir: str) -> dict | None:
    """best.json of ``<model_dir>/export_best``, or None when no best model was kept yet."""
    return read_json(join(join(model_dir, BEST_DIR), BEST_FILE))


class BestKeeper:
    """Offers each evaluated checkpoint; exports it when it beats the kept one."""

    def __init__(self, model_dir: str, metric: str, export_fn):
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"best metric {metric!r} is not one of {sorted(HIGHER_IS_BETTER)}")
        self.model_dir, self.metric, self.export_fn = model_dir, metric, export_fn
        self.final = join(model_dir, BEST_DIR)

    def offer(self, step: int, metrics: dict, model) -> bool:
        """Exports ``model`` (holding the weights of ``step``) if its metric is better than
        the kept one's; returns whether it did. ``export_fn(model, path)`` writes it."""
        kept = read_best(self.model_dir)
        if kept is not None and kept["step"] == step:
            return False  # a restarted evaluator offering the same checkpoint again
        old = kept["metrics"].get(self.metric) if kept else None
        new = metrics.get(self.metric)
        if not is_better(self.metric, new, old):
            logging.info(
                "step %d: %s %.4f does not beat the best (step %d, %.4f): export_best kept",
                step,
                self.metric,
                new,
                kept["step"],
                old,
            )
            return False
        record = {
            "step": step,
            "metric": self.metric,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "time": time.time(),
        }
        with folder_written_whole(self.final) as tmp:
            self.export_fn(model, tmp)
            write_json(join(tmp, BEST_FILE), record, indent=2, sort_keys=True)
        logging.info(
            "new best %s %.4f at step %d: exported to %s", self.metric, new, step, self.final
        )
        return True
