"""Early stopping: the run ends after ``patience`` evaluations without improvement of a metric.

The decision is a pure function of the eval's figures, which are all-reduced and so the same
on every worker, and of the count so far, which every worker reads from the same record
(``<model_dir>/eval/early_stop.json``, written by the chief after each eval): every worker
stops after the same eval, before the next collective, with no vote to wait for. A resumed run
goes on counting from the record; a rerun of a run that stopped early trains nothing.
"""

from __future__ import annotations

from trainer.common.files import read_json, write_json
from trainer.common.paths import join
from trainer.run.best import is_better

RECORD = "early_stop.json"


class EarlyStop:
    """Called after each eval as ``(step, metrics) -> bool`` (True: stop here)."""

    def __init__(self, *, model_dir: str, metric: str, patience: int, write: bool, log):
        self.path = join(join(model_dir, "eval"), RECORD)
        self.metric, self.patience, self.write, self.log = metric, patience, write, log
        saved = read_json(self.path) or {}
        same = saved.get("metric") == metric and saved.get("patience") == patience
        self.best = saved.get("best") if same else None
        self.best_step = saved.get("best_step") if same else None
        self.since = int(saved.get("since", 0)) if same else 0
        self.stopped_at = saved.get("stopped_at") if same else None

    @property
    def done(self) -> bool:
        return self.stopped_at is not None

    def __call__(self, step: int, metrics: dict) -> bool:
        value = metrics.get(self.metric)
        if is_better(self.metric, value, self.best):
            self.best, self.best_step, self.since = value, step, 0
        else:
            self.since += 1
        if self.since >= self.patience:
            self.stopped_at = step
            self.log(
                f"early stop at step {step}: {self.metric} has not improved for {self.since} "
                f"evaluations; the best was {self.best} at step {self.best_step}"
            )
        if self.write:
            record = {
                "metric": self.metric,
                "patience": self.patience,
                "best": self.best,
                "best_step": self.best_step,
                "since": self.since,
                "stopped_at": self.stopped_at,
            }
            write_json(self.path, record, indent=2, sort_keys=True)
        return self.done
