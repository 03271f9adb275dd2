"""A run resumed at another size: what carries over, in the lines the trainer logs at start.

The contract (README "Changing the size of a run"): the global step, the optimizer's state
(its iteration count, moments and loss scale) and the pairs seen come from the checkpoint
whatever the size. The global batch is the flag's (--global_batch_size, times
--grad_accum_steps for the pairs a step takes), the same unless the user changes it.
Each worker's data position is the pairs seen divided by the number of workers:
- the same number of workers (any GPUs per worker): every worker reads on exactly where the
  checkpoint left it, so the run reads the pairs an uninterrupted run would have read;
- another number of workers: the training files are shared out anew, each worker starts its
  new share that many pairs in, so until each worker's share begins its next epoch some
  pairs of the current epoch may come twice and others not at all (the counts stay exact);
- another global batch: steps go on from the checkpoint's step, each now taking the new
  number of pairs (train_steps, the rate schedule and the intervals count steps).

The checkpoint records the size it was saved at (workers, pairs a step); one saved before
it did is taken to be of this run's size, and nothing is said.
"""

from __future__ import annotations

import dataclasses

from trainer.common.console import plural

IDS_SHOWN = 5  # pair ids in a worker's line: enough to check an order by eye


@dataclasses.dataclass(frozen=True)
class Size:
    """The size a run's data position is measured in."""

    workers: int
    step_pairs: int  # pairs per step over all workers (global batch x accumulation)


def resize_lines(
    *, saved: Size, now: Size, step: int, pairs_seen: int, service: bool = False
) -> list[str]:
    """The lines a resumed run logs when its size differs from the checkpoint's (none when
    it is the same, or the checkpoint does not record its size). ``service``: the input
    comes from the tf.data service, whose resume restarts its epoch whatever the size."""
    lines = []
    if saved.workers and saved.workers != now.workers:
        data = (
            "the tf.data service restarts the epoch, as at every resume through it."
            if service
            else f"the training files are shared out anew, each worker starting its share "
            f"{pairs_seen // now.workers:,} pairs in, so until its next epoch some pairs may "
            "come twice and others not at all."
        )
        lines.append(
            f"resumed on {plural(now.workers, 'worker')} after {saved.workers}: step {step}, the "
            f"optimizer's state and the {pairs_seen:,} pairs seen carry over; {data}"
        )
    if saved.step_pairs and saved.step_pairs != now.step_pairs:
        lines.append(
            f"a step now takes {now.step_pairs} pairs, the checkpoint's took "
            f"{saved.step_pairs} (--global_batch_size x --grad_accum_steps): the run goes on "
            f"from step {step} with the {pairs_seen:,} pairs seen, now {now.step_pairs} a step "
            "(--train_steps, the rate schedule and the intervals count steps, not pairs)."
        )
    return lines


def worker_line(
    *, worker: int, workers: int, start: int, per_epoch: int, ids: list[str] | None
) -> str:
    """Where one worker of a resized run reads on, with the ids of its next pairs."""
    epoch, into = divmod(start, per_epoch)
    line = f"worker {worker} of {workers} reads on at pair {into:,} of epoch {epoch} of its share"
    if ids is None:
        return line + " (--cache: pair ids not shown)"
    shown = ", ".join(ids[:IDS_SHOWN]) + (", ..." if len(ids) > IDS_SHOWN else "")
    return f"{line}: next pairs {shown}"
