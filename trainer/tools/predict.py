"""``python -m trainer.predict``: score pairs with an exported SavedModel.

One pair:    ``--saved_model DIR A.png B.png`` prints the probability that B follows A.
Many pairs:  ``--saved_model DIR --pairs pairs.csv --output scores.csv [--batch_size B]``
             writes ``image_a,image_b,probability[,label]``, one row per input row in input
             order; ``--data_dir DIR [--split eval]`` scores TFRecords instead
             (``pair_id,probability,label``). With labels, loss, accuracy and AUC are printed.
Paths may be local or gs://. Rows with missing or unreadable images are named by CSV line;
nothing is written unless ``--skip_bad_rows``. The output appears whole or not at all.
"""

from __future__ import annotations

import csv
import io
import sys

from absl import flags

from trainer.common import cli
from trainer.common.console import plural
from trainer.common.files import write_atomic


def define_source_flags(fv: flags.FlagValues) -> None:
    """The flags that name a model and the pairs to score (predict and report share them)."""
    flags.DEFINE_string(
        "saved_model", None, "Exported SavedModel folder (local or gs://).", flag_values=fv
    )
    flags.DEFINE_string(
        "pairs", "", "CSV of image_a,image_b[,label] rows (local or gs://).", flag_values=fv
    )
    flags.DEFINE_string("data_dir", "", "A dataset folder of TFRecords to score.", flag_values=fv)
    flags.DEFINE_string("split", "eval", "With --data_dir: the split to score.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 256, "Pairs per SavedModel call.", flag_values=fv)
    flags.DEFINE_boolean(
        "skip_bad_rows", False, "Score the rows whose images load; name the rest.", flag_values=fv
    )


FLAGS = flags.FlagValues()  # this tool's own flags only
define_source_flags(FLAGS)
flags.DEFINE_string("output", "", "Where the scores CSV goes (local or gs://).", flag_values=FLAGS)

USAGE = (
    "usage: python -m trainer.predict --saved_model DIR (A.png B.png | --pairs CSV --output "
    "OUT.csv | --data_dir DIR --output OUT.csv)"
)


def predict(saved_model: str, image_a: bytes, image_b: bytes) -> float:
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model)
    out = loaded.signatures["serving_default"](
        input1=tf.constant([image_a]), input2=tf.constant([image_b])
    )
    return float(out["probability"].numpy()[0, 0])


def check_source_flags(argv_paths: list, pairs: str, data_dir: str, batch_size: int) -> str:
    """'' when the flags name exactly one input, else the sentence saying what is wrong."""
    given = [name for name, v in (("--pairs", pairs), ("--data_dir", data_dir)) if v]
    if argv_paths and given:
        return f"give either two image files or {given[0]}, not both"
    if len(given) > 1:
        return "give --pairs or --data_dir, not both"
    if not argv_paths and not given:
        return USAGE
    if batch_size < 1:
        return f"--batch_size={batch_size} is invalid: it must be > 0"
    return ""


def score(fv: flags.FlagValues, keep_wrong: int = 0):
    """Scored pairs for the input that ``fv`` (a tool's parsed source flags) names."""
    from trainer.tools import scoring

    if fv.pairs:
        return scoring.score_csv(
            fv.saved_model, fv.pairs, fv.batch_size, fv.skip_bad_rows, keep_wrong
        )
    return scoring.score_records(fv.saved_model, fv.data_dir, fv.split, fv.batch_size, keep_wrong)


def scores_csv(scored) -> str:
    """The output file's text: a header, then one row per scored pair in input order."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    id_columns = ["image_a", "image_b"] if len(scored.ids[0]) == 2 else ["pair_id"]
    w.writerow(id_columns + ["probability"] + (["label"] if scored.labels is not None else []))
    for i, ids in enumerate(scored.ids):
        row = [*ids, f"{float(scored.scores[i]):.7f}"]
        if scored.labels is not None:
            row.append(int(scored.labels[i]))
        w.writerow(row)
    return out.getvalue()


def fail_on_storage(e) -> int:
    """Exit status and one sentence for a Cloud Storage failure (75 when transient)."""
    from trainer.runtime import storage

    said = storage.failure_exit(e)
    if said is None:
        raise e
    sys.stderr.write(said[0] + "\n")
    return said[1]


def guarded(action):
    """Runs ``action()``: (its result, None), or (None, exit status) after one sentence for
    bad input (1) or a Cloud Storage failure (75 when transient). Names skipped rows."""
    import tensorflow as tf

    from trainer.runtime import storage
    from trainer.tools import scoring

    try:
        scored = action()
    except (scoring.ScoringError, storage.StorageError, ValueError) as e:  # DataError too
        sys.stderr.write(f"error: {e}\n")
        return None, 1
    except tf.errors.OpError as e:
        return None, fail_on_storage(e)
    for line in getattr(scored, "bad", None) or []:
        sys.stderr.write(f"skipped {line}\n")
    return scored, None


def _batch(output: str) -> int:

    from trainer.runtime import storage
    from trainer.tools import metrics

    if not output:
        sys.stderr.write("error: --output is missing: name the scores CSV to write.\n")
        return 1
    try:
        storage.check_output_file(output, "--output")
    except storage.StorageError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1

    def run():
        storage.require_bucket(output, "output")
        scored = score(FLAGS)
        write_atomic(output, scores_csv(scored))
        return scored

    scored, code = guarded(run)
    if code is not None:
        return code
    skipped = f", skipped {plural(len(scored.bad), 'bad row')}" if scored.bad else ""
    print(
        f"scored {plural(len(scored.scores), 'pair')} in {scored.seconds:.1f} s "
        f"({scored.rate:,.0f} pairs/s){skipped}: {output}"
    )
    if scored.labels is not None:
        try:
            m = metrics.summary(scored.scores, scored.labels)
        except ValueError as e:
            sys.stderr.write(f"no metrics: {e}\n")
            return 0
        print(
            f"loss {m['loss']:.4f} accuracy {m['at_0.5']['accuracy']:.4f} auc {m['auc']:.4f} "
            f"on {plural(m['pairs'], 'labelled pair')}"
        )
    return 0


def _main(argv) -> int:
    import tensorflow as tf

    from trainer.data.write.image_pass import load_image
    from trainer.tools.scoring import ScoringError, check_saved_model

    paths = argv[1:]
    if not FLAGS.saved_model:
        sys.stderr.write(f"error: --saved_model is missing; {USAGE}\n")
        return 1
    problem = check_source_flags(paths, FLAGS.pairs, FLAGS.data_dir, FLAGS.batch_size)
    if problem:
        sys.stderr.write(f"error: {problem}.\n" if problem != USAGE else f"error: {USAGE}\n")
        return 1
    if not paths:
        return _batch(FLAGS.output)
    if len(paths) != 2:
        sys.stderr.write(f"error: {USAGE}\n")
        return 1
    try:
        check_saved_model(FLAGS.saved_model)
    except ScoringError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    images = []
    for p in paths:  # each checked alone, so the sentence names the one that is not an image
        try:
            images.append(load_image(p)[0])
        except ValueError as e:
            sys.stderr.write(f"error: image {p}: {e}.\n")
            return 1
    try:
        prob = predict(FLAGS.saved_model, *images)
    except tf.errors.InvalidArgumentError:
        sys.stderr.write(f"error: {paths[0]} or {paths[1]} is not a PNG or JPEG image.\n")
        return 1
    print(f"{prob:.6f}")
    return 0


def main(argv: list[str]) -> int:
    """``python -m trainer.predict ARGV`` in this process; the exit status."""
    return cli.call(_main, FLAGS, argv)
