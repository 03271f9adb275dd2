"""``python -m trainer.report``: how good an exported model is, as figures and pictures.

``--saved_model DIR (--pairs CSV | --data_dir DIR [--split eval]) --output_dir OUT`` scores
the labelled pairs (trainer.tools.scoring, the batch prediction pipeline) and writes to OUT (local
or gs://): ``metrics.json`` (AUC, loss, and accuracy, precision, recall and F1 at 0.5 and at
the threshold that maximizes F1) and five PNGs drawn with matplotlib:

- ``roc.png``: the ROC curve with its AUC, both thresholds marked;
- ``precision_recall.png``: precision against recall, the positives' base rate for reference;
- ``score_histogram.png``: the scores of each class, so the overlap is plain to see;
- ``confusion.png``: the confusion matrices at 0.5 and at the best-F1 threshold;
- ``most_wrong.png``: the most confidently wrong pairs, both images side by side with their
  label and score.
"""

from __future__ import annotations

import io
import sys

from absl import flags

from trainer.common import cli
from trainer.common.files import write_json
from trainer.tools.predict import USAGE as PREDICT_USAGE
from trainer.tools.predict import check_source_flags, define_source_flags, guarded, score

FLAGS = flags.FlagValues()  # this tool's own flags only
define_source_flags(FLAGS)
flags.DEFINE_string(
    "output_dir", "", "Where metrics.json and the PNGs go (local or gs://).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "wrong_pairs", 12, "Pairs on the most-confidently-wrong sheet.", flag_values=FLAGS
)
USAGE = (
    "usage: python -m trainer.report --saved_model DIR (--pairs CSV | --data_dir DIR) "
    "--output_dir OUT"
)

CLASS_NAMES = ("different", "follows")  # label 0, label 1
PICTURES = (
    "roc.png",
    "precision_recall.png",
    "score_histogram.png",
    "confusion.png",
    "most_wrong.png",
)


def _figure(width=6.4, height=4.8, grid=None):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster or in CI
    import matplotlib.pyplot as plt

    if grid is None:
        return plt.subplots(figsize=(width, height), dpi=100)
    return plt.subplots(*grid, figsize=(width, height), dpi=100, squeeze=False)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def roc_picture(scores, labels, summary) -> bytes:
    from trainer.tools import metrics

    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    fig, ax = _figure()
    ax.plot(fpr, tpr, lw=2, label=f"model (AUC {summary['auc']:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC 0.5)")
    for key, marker in (("at_0.5", "o"), ("at_best_f1", "s")):
        m = summary[key]
        fp_rate = m["fp"] / max(m["fp"] + m["tn"], 1)
        ax.plot(fp_rate, m["recall"], marker, ms=9, label=f"threshold {m['threshold']:.3f}")
    ax.set(
        xlabel="false positive rate (different pairs called follows)",
        ylabel="true positive rate (recall of follows)",
        title=f"ROC curve on {summary['pairs']} pairs",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def pr_picture(scores, labels, summary) -> bytes:
    from trainer.tools import metrics

    recall, precision, _ = metrics.pr_curve(scores, labels)
    base = summary["positives"] / max(summary["pairs"], 1)
    fig, ax = _figure()
    ax.plot(recall, precision, lw=2, label="model")
    ax.axhline(base, ls="--", color="grey", label=f"base rate {base:.2f} (always follows)")
    for key, marker in (("at_0.5", "o"), ("at_best_f1", "s")):
        m = summary[key]
        ax.plot(
            m["recall"],
            m["precision"],
            marker,
            ms=9,
            label=f"threshold {m['threshold']:.3f}: F1 {m['f1']:.3f}",
        )
    ax.set(
        xlabel="recall (share of follows pairs found)",
        ylabel="precision (share of follows calls that are right)",
        title="Precision against recall",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def histogram_picture(scores, labels, summary) -> bytes:
    import numpy as np

    fig, ax = _figure()
    bins = np.linspace(0, 1, 41)
    for value, color in ((0, "tab:blue"), (1, "tab:orange")):
        chosen = scores[labels == value]
        ax.hist(
            chosen,
            bins=bins,
            alpha=0.6,
            color=color,
            label=f"label {value}: {CLASS_NAMES[value]} ({chosen.size})",
        )
    ax.axvline(0.5, color="black", ls="--", label="threshold 0.5")
    best = summary["at_best_f1"]["threshold"]
    ax.axvline(best, color="red", ls=":", label=f"best-F1 threshold {best:.3f}")
    ax.set(
        xlabel="predicted probability that the second image follows the first",
        ylabel="pairs",
        title="Scores per true class (well separated = a good model)",
        xlim=(0, 1),
    )
    ax.legend(loc="upper center")
    return _png(fig)


def confusion_picture(summary) -> bytes:
    import numpy as np

    fig, axes = _figure(10, 4.6, grid=(1, 2))
    axes = axes[0]
    for ax, key in zip(axes, ("at_0.5", "at_best_f1")):
        m = summary[key]
        table = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(table, cmap="Blues")
        total = max(table.sum(), 1)
        for (i, j), n in np.ndenumerate(table):
            dark = n > table.max() / 2
            ax.text(
                j,
                i,
                f"{n}\n{100 * n / total:.1f}%",
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=13,
            )
        ax.set_xticks([0, 1], [f"called {c}" for c in CLASS_NAMES])
        ax.set_yticks([0, 1], [f"truly {c}" for c in CLASS_NAMES])
        ax.set_title(
            f"threshold {m['threshold']:.3f}: accuracy {m['accuracy']:.3f}, F1 {m['f1']:.3f}"
        )
    fig.tight_layout(w_pad=3)
    return _png(fig)


def wrong_picture(wrong: list, per_row: int = 3) -> bytes:
    """A sheet of pairs, ``per_row`` pairs to a row: first image | second image, with the
    true class and score above and the pair's id below."""
    per_row = max(1, min(per_row, len(wrong)))
    rows = max(1, -(-len(wrong) // per_row))
    fig, axes = _figure(3.2 * per_row, 2.1 * rows + 0.5, grid=(rows, 2 * per_row))
    for ax in axes.flat:
        ax.axis("off")
    if not wrong:
        axes[0][0].set_title("no pair is on the wrong side of 0.5", loc="left")
    for n, item in enumerate(wrong):
        row, col = divmod(n, per_row)
        left, right = axes[row][2 * col], axes[row][2 * col + 1]
        for ax, key in ((left, "image_a"), (right, "image_b")):
            image = item[key]
            gray = image.shape[-1] == 1
            ax.imshow(
                image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1
            )
        left.set_title(
            f"truly {CLASS_NAMES[item['label']]}, score {item['score']:.3f}",
            fontsize=9,
            color="darkred",
            loc="left",
        )
        name = " / ".join(item["id"])
        left.text(
            0,
            -0.08,
            f"#{item['index']} {name[-40:]}",
            fontsize=6,
            transform=left.transAxes,
            va="top",
        )
    fig.suptitle("Most confidently wrong pairs (each: first image | second image)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def write_report(scored, output_dir: str, wrong_pairs: int) -> dict:
    """metrics.json and the PNGs for scored pairs with labels; returns the metrics."""
    import tensorflow as tf

    from trainer.data.schema import join
    from trainer.tools import metrics

    summary = metrics.summary(scored.scores, scored.labels)
    tf.io.gfile.makedirs(output_dir)
    pictures = {
        "roc.png": roc_picture(scored.scores, scored.labels, summary),
        "precision_recall.png": pr_picture(scored.scores, scored.labels, summary),
        "score_histogram.png": histogram_picture(scored.scores, scored.labels, summary),
        "confusion.png": confusion_picture(summary),
        "most_wrong.png": wrong_picture(scored.wrong[:wrong_pairs]),
    }
    for name, data in pictures.items():
        with tf.io.gfile.GFile(join(output_dir, name), "wb") as f:
            f.write(data)
    write_json(join(output_dir, "metrics.json"), summary, indent=2, sort_keys=True)
    return summary


def usage_problem(fv) -> str:
    """What the report's flags lack ('' when none): the flags that are missing by name, then
    the input (--pairs or --data_dir, one of them)."""
    missing = [f"--{n}" for n in ("saved_model", "output_dir") if not fv[n].value]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    problem = check_source_flags([], fv.pairs, fv.data_dir, fv.batch_size)
    return "give --pairs or --data_dir" if problem == PREDICT_USAGE else problem


def _main(argv) -> int:
    from trainer.runtime import storage
    from trainer.tools import scoring

    if len(argv) > 1:
        sys.stderr.write(f"error: unexpected arguments {argv[1:]}: flags look like --name=value.\n")
        return 1
    problem = usage_problem(FLAGS)
    if problem:
        sys.stderr.write(f"error: {problem}; {USAGE}.\n")
        return 1
    if FLAGS.wrong_pairs < 0:
        sys.stderr.write(f"error: --wrong_pairs={FLAGS.wrong_pairs} is invalid: use >= 0.\n")
        return 1

    def run():
        storage.check_local_folder(FLAGS.output_dir, "--output_dir")
        storage.require_bucket(FLAGS.output_dir, "output_dir")
        if FLAGS.pairs:  # before the model loads: a CSV without labels cannot be reported on
            from trainer.data.write import pairs_csv

            if pairs_csv.read_pairs_csv(FLAGS.pairs, labels_required=False)[0].label is None:
                raise scoring.ScoringError(
                    f"{FLAGS.pairs} has no label column: a report compares scores with labels."
                )
        scored = score(FLAGS, keep_wrong=FLAGS.wrong_pairs)
        scored.summary = write_report(scored, FLAGS.output_dir, FLAGS.wrong_pairs)
        return scored

    scored, code = guarded(run)
    if code is not None:
        return code
    summary = scored.summary
    best = summary["at_best_f1"]
    print(
        f"{summary['pairs']} pairs: auc {summary['auc']:.4f} loss {summary['loss']:.4f} "
        f"accuracy {summary['at_0.5']['accuracy']:.4f} at 0.5, F1 {best['f1']:.4f} at "
        f"{best['threshold']:.4f}; report in {FLAGS.output_dir}: metrics.json, "
        + ", ".join(PICTURES)
    )
    return 0


def main(argv: list[str]) -> int:
    """``python -m trainer.report ARGV`` in this process; the exit status."""
    return cli.call(_main, FLAGS, argv)
