"""Pure functions: TF_CONFIG derivation, strategy, XLA and thread-pool choice, AUC and the
metrics, the best-model rule, pairs CSVs, steps per loop, a resize named, launch local's words,
export and cache folders. Cloud Storage's rules are in test_storage_rules.py."""

import json
import os

import numpy as np
import pytest

from trainer.runtime import cluster as tfconfig


def test_tf_config_used_as_is():
    raw = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    env = {"TF_CONFIG": json.dumps(raw), "JOB_COMPLETION_INDEX": "0", "TRAINER_WORKER_HOSTS": "x:9"}
    assert tfconfig.derive_tf_config(env) == raw
    assert tfconfig.task_of(raw) == (1, 2)


def test_indexed_job_variables_give_stable_dns_names():
    env = {
        "JOB_COMPLETION_INDEX": "2",
        "TRAINER_JOB_NAME": "exp1",
        "TRAINER_SERVICE": "exp1",
        "TRAINER_NUM_WORKERS": "3",
        "TRAINER_PORT": "2222",
    }
    assert tfconfig.derive_tf_config(env) == {
        "cluster": {"worker": ["exp1-0.exp1:2222", "exp1-1.exp1:2222", "exp1-2.exp1:2222"]},
        "task": {"type": "worker", "index": 2},
    }


def test_local_hosts_and_single_process():
    env = {"JOB_COMPLETION_INDEX": "0", "TRAINER_WORKER_HOSTS": "localhost:5001,localhost:5002"}
    cfg = tfconfig.derive_tf_config(env)
    assert cfg["cluster"]["worker"] == ["localhost:5001", "localhost:5002"]
    assert tfconfig.task_of(cfg) == (0, 2)
    assert tfconfig.derive_tf_config({}) is None
    assert tfconfig.derive_tf_config({"JOB_COMPLETION_INDEX": "0"}) is None  # an Indexed Job alone
    assert tfconfig.task_of(None) == (0, 1)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"TF_CONFIG": "{nope"}, "TF_CONFIG is not valid JSON"),
        ({"JOB_COMPLETION_INDEX": "x", "TRAINER_WORKER_HOSTS": "a:1"}, "JOB_COMPLETION_INDEX='x'"),
        ({"JOB_COMPLETION_INDEX": "3", "TRAINER_WORKER_HOSTS": "a:1,b:2"}, "worker index 3"),
    ],
)
def test_bad_cluster_environment(env, fragment):
    with pytest.raises(ValueError, match=fragment):
        tfconfig.derive_tf_config(env)


def test_choose_strategy_and_jit():
    from trainer.runtime.strategy import choose_strategy, use_jit

    assert choose_strategy("auto", has_cluster=True, num_gpus=0) == "multi_worker"
    assert choose_strategy("auto", has_cluster=False, num_gpus=4) == "mirrored"
    assert choose_strategy("auto", has_cluster=False, num_gpus=1) == "one_device"
    assert choose_strategy("auto", has_cluster=False, num_gpus=0) == "one_device"
    assert choose_strategy("mirrored", has_cluster=True, num_gpus=0) == "mirrored"
    assert use_jit("auto", 1) and not use_jit("auto", 0)
    assert use_jit("true", 0) and not use_jit("false", 8)


def test_thread_pools_and_input_placement():
    from trainer.runtime.strategy import fetch_to_device
    from trainer.runtime.threads import thread_counts

    # CPU only: one thread per op (ops run side by side on the inter-op pool).
    assert thread_counts(0, 0, num_gpus=0, env={}) == (1, 0)
    # GPUs, or the user's own TF_NUM_INTRAOP_THREADS: TensorFlow decides.
    assert thread_counts(0, 0, num_gpus=2, env={}) == (0, 0)
    assert thread_counts(0, 0, num_gpus=0, env={"TF_NUM_INTRAOP_THREADS": "4"}) == (0, 0)
    # Flags win over everything.
    assert thread_counts(3, 5, num_gpus=0, env={"TF_NUM_INTRAOP_THREADS": "4"}) == (3, 5)
    assert thread_counts(2, 0, num_gpus=8, env={}) == (2, 0)
    # Batches are copied ahead to accelerators only.
    assert fetch_to_device(1) and not fetch_to_device(0)


def test_auc_from_histograms_matches_pairwise_count():
    from trainer.run.steps import AUC_BINS, auc_from_histograms

    rng = np.random.default_rng(0)
    pos_scores = rng.beta(4, 2, 300)
    neg_scores = rng.beta(2, 4, 500)

    def bins(scores):
        return np.bincount(
            np.minimum((scores * AUC_BINS).astype(int), AUC_BINS - 1), minlength=AUC_BINS
        )

    auc = auc_from_histograms(bins(pos_scores), bins(neg_scores))
    exact = (pos_scores[:, None] > neg_scores[None, :]).mean()
    assert abs(auc - exact) < 0.01
    assert auc_from_histograms(bins(np.array([0.9])), bins(np.array([0.1]))) == 1.0


def test_an_evaluator_never_joins_a_cluster():
    from trainer.config import ConfigError
    from trainer.runtime.strategy import choose_strategy

    assert choose_strategy("auto", True, 0) == "multi_worker"
    assert choose_strategy("auto", True, 0, evaluator=True) == "one_device"
    assert choose_strategy("auto", True, 2, evaluator=True) == "mirrored"
    with pytest.raises(ConfigError, match="an evaluator runs alone"):
        choose_strategy("multi_worker", False, 0, evaluator=True)


def test_exact_auc_thresholds_and_f1_against_pairwise_counts():
    from trainer.tools import metrics

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.6 + 0.4 * labels, 2)  # rounded: many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    assert metrics.auc(scores, labels) == pytest.approx(((diff > 0) + 0.5 * (diff == 0)).mean())
    t = metrics.best_f1_threshold(scores, labels)
    f1 = {u: metrics.at_threshold(scores, labels, u)["f1"] for u in np.unique(scores)}
    assert f1[t] == max(f1.values()) and t == min(u for u in f1 if f1[u] == f1[t])
    at = metrics.at_threshold(scores, labels, 0.5)
    assert at["tp"] + at["fp"] + at["fn"] + at["tn"] == 300
    assert at["tp"] == int(np.sum((scores >= 0.5) & (labels == 1)))
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert metrics.log_loss(scores, labels) == pytest.approx(loss)
    assert np.isnan(metrics.auc(scores, np.ones(300)))
    with pytest.raises(ValueError, match="labels 2 are not 0 or 1"):
        metrics.summary(scores, np.where(labels == 1, 2, 0))


def test_best_model_rule_and_checkpoints_to_evaluate():
    from trainer.run.best import is_better
    from trainer.run.continuous import finished, pending

    assert is_better("auc", 0.8, 0.7) and not is_better("auc", 0.7, 0.7)  # a tie keeps it
    assert is_better("loss", 0.2, 0.3) and not is_better("loss", 0.3, 0.2)
    assert is_better("accuracy", 0.1, None) and is_better("loss", 0.5, float("nan"))
    assert not is_better("loss", float("nan"), 0.5) and not is_better("auc", float("inf"), 0.5)
    assert pending([3, 6, 9, 12], {3: {}, 9: {}}, {6}) == [12]
    assert pending([12, 3], {}, set()) == [3, 12]
    assert finished({12: {}}, 12) and finished({15: {}}, 12) and not finished({9: {}}, 12)


def test_pairs_csv_with_and_without_labels(tmp_path):
    from trainer.data.schema import DataError
    from trainer.data.write.pairs_csv import read_pairs_csv

    def rows(text, **kw):
        (tmp_path / "p.csv").write_text(text)
        return read_pairs_csv(str(tmp_path / "p.csv"), **kw)

    got = rows("first,second\nx/a.png,/abs/b.png\n", labels_required=False)
    assert [(r.line, r.given_a, r.image_a, r.image_b, r.label) for r in got] == [
        (2, "x/a.png", f"{tmp_path}/x/a.png", "/abs/b.png", None)
    ]
    assert len(rows("a.png,b.png\nc.png,d.png\n", labels_required=False)) == 2  # no header
    assert rows("a,b,label\na.png,b.png,1\n", labels_required=False)[0].label == 1
    with pytest.raises(DataError, match="line 3: expected 2 fields, found 3"):
        rows("a.png,b.png\nc.png,d.png\ne.png,f.png,1\n", labels_required=False)
    with pytest.raises(DataError, match="line 1: expected 3 fields, found 2"):
        rows("a.png,b.png\n")
    # The model is binary: a label it cannot learn is refused, naming the line.
    with pytest.raises(DataError, match=r"line 3: label 2 is not 0 or 1 \(the model is binary"):
        rows("a,b,label\na.png,b.png,1\nc.png,d.png,2\n")
    with pytest.raises(DataError, match="line 1: label -1 is not 0 or 1"):
        rows("a.png,b.png,-1\n")
    # Thousands of bad lines: the first ten and a count, not a page per line.
    with pytest.raises(DataError) as many:
        rows("a,b,label\n" + "".join(f"a{i}.png,b.png,x\n" for i in range(3000)))
    message = str(many.value)
    assert "has 3000 bad lines" in message and message.endswith("; and 2990 more.")
    assert message.count("is not an integer") == 10 and len(message) < 1000


def test_steps_per_loop_and_compile_plans_per_device():
    from trainer.checks import parse_steps_per_loop
    from trainer.config import ConfigError
    from trainer.runtime.strategy import compile_plan, steps_per_loop

    assert steps_per_loop(parse_steps_per_loop("auto"), 0) == 10
    assert steps_per_loop(parse_steps_per_loop("auto"), 8) == 100
    assert steps_per_loop(parse_steps_per_loop("7"), 0) == 7
    with pytest.raises(ConfigError, match="--steps_per_loop=0 is invalid"):
        parse_steps_per_loop("0")
    assert compile_plan(False, 8, 1) == "none"
    assert compile_plan(True, 0, 1) == "forward_backward"  # CPU: unchanged
    assert compile_plan(True, 1, 1) == "whole_step"  # one GPU replica: all of it
    assert compile_plan(True, 4, 4) == "forward_backward"  # all-reduce inside optimizer.apply


def test_a_resumed_run_names_a_change_of_size_and_keeps_quiet_otherwise():
    from trainer.run.resize import Size, resize_lines, worker_line

    same = resize_lines(saved=Size(2, 64), now=Size(2, 64), step=40, pairs_seen=2560)
    unknown = resize_lines(saved=Size(0, 0), now=Size(3, 96), step=40, pairs_seen=2560)
    assert same == unknown == []  # a checkpoint from before sizes were saved: nothing to say
    (fewer,) = resize_lines(saved=Size(2, 64), now=Size(1, 64), step=40, pairs_seen=2560)
    assert fewer.startswith("resumed on 1 worker after 2: step 40, ")
    assert "the 2,560 pairs seen carry over" in fewer and "share 2,560 pairs in" in fewer
    more, batch = resize_lines(saved=Size(1, 64), now=Size(3, 96), step=40, pairs_seen=2560)
    assert more.startswith("resumed on 3 workers after 1") and "share 853 pairs in" in more
    assert batch.startswith("a step now takes 96 pairs, the checkpoint's took 64 ")
    assert "goes on from step 40 with the 2,560 pairs seen, now 96 a step" in batch
    (served,) = resize_lines(
        saved=Size(2, 64), now=Size(1, 64), step=4, pairs_seen=256, service=True
    )
    assert served.endswith(
        "carry over; the tf.data service restarts the epoch, as at every resume through it."
    )
    assert worker_line(worker=1, workers=3, start=853, per_epoch=200, ids=list("abcdefghij")) == (
        "worker 1 of 3 reads on at pair 53 of epoch 4 of its share: next pairs a, b, c, d, e, ..."
    )
    assert worker_line(worker=0, workers=1, start=5, per_epoch=9, ids=None).endswith(
        "pair 5 of epoch 0 of its share (--cache: pair ids not shown)"
    )


def test_counts_read_as_words():
    from trainer.common.console import plural

    assert [plural(n, "replica") for n in (0, 1, 2)] == ["0 replicas", "1 replica", "2 replicas"]
    assert plural(1, "training file") == "1 training file"


def test_launch_local_says_how_each_group_ended():
    from launch.local.workers import _outcome, group_summary

    # (exit codes when the launcher saw the outcome, after it stopped the others)
    assert _outcome([0, None]) is None and _outcome([0, 0]) == "done"
    assert _outcome([-9, None]) == "retry" and _outcome([75, 0]) == "retry"
    assert _outcome([1, None]) == "fail" and _outcome([1, -9]) == "fail"
    assert (
        group_summary("done", [0, 0, 0], [0, 0, 0]) == "[launch] done: 3 workers finished (exit 0)"
    )
    assert group_summary("retry", [-9, None], [-9, 75]) == (
        "[launch] worker 0 was killed by SIGKILL: the group stops; exit codes [-9, 75]"
    )
    assert group_summary("retry", [0, 75], [0, 75]) == (
        "[launch] worker 1 exited 75 (stopped, to be resumed): the group stops; exit codes [0, 75]"
    )
    assert group_summary("fail", [None, 1], [-15, 1]) == (
        "[launch] worker 1 exited 1 (bad input): no restart: a retry cannot mend that; "
        "exit codes [-15, 1]"
    )
    assert group_summary("retry", [3, -6], [3, -6]) == (
        "[launch] worker 0 exited 3, worker 1 was killed by SIGABRT: the group stops; "
        "exit codes [3, -6]"
    )


def test_launch_local_options_reach_its_config():
    from launch.__main__ import local_config, parser

    args = parser().parse_args(
        ["local", "--workers", "3", "--skip_preflight", "--data_workers", "1"]
    )
    cfg = local_config(args, ["--train_steps=5"])
    assert (cfg.workers, cfg.data_workers, cfg.skip_preflight) == (3, 1, True)
    assert cfg.trainer_args == ("--train_steps=5",)
    default = local_config(parser().parse_args(["local"]), [])
    assert (default.workers, default.skip_preflight, default.max_restarts) == (2, False, 3)


def test_workers_on_this_host_only_for_an_all_loopback_cluster():
    from trainer.runtime.cluster import worker_tf_config, workers_on_this_host

    local = worker_tf_config(["localhost:1", "127.0.0.1:2", "[::1]:3"], 1)
    assert workers_on_this_host(local) == 3
    pods = worker_tf_config(["exp1-0.exp1:2222", "exp1-1.exp1:2222"], 0)
    assert workers_on_this_host(pods) == 0
    mixed = worker_tf_config(["localhost:1", "exp1-1.exp1:2222"], 0)
    assert workers_on_this_host(mixed) == 0
    assert workers_on_this_host(worker_tf_config(["localhost:1"], 0)) == 0  # one process
    assert workers_on_this_host(None) == 0


def test_an_evaluator_ends_with_what_it_evaluated_in_words():
    from trainer.run.continuous import record_summary

    assert record_summary(0, {}) == "continuous eval: evaluated 0 checkpoints this run, none in all"
    assert record_summary(1, {4: {}, 8: {}}) == (
        "continuous eval: evaluated 1 checkpoint this run, 2 in all (steps 4, 8)"
    )


def test_an_export_folder_is_replaced_beside_itself_and_only_over_a_saved_model():
    from trainer.common.files import beside
    from trainer.runtime.storage import StorageError, check_export_folder

    assert beside("gs://b/runs/x/export", "new") == "gs://b/runs/x/.export.new"
    assert beside("/runs/x/export/", "old") == "/runs/x/.export.old"
    assert beside("export", "new") == os.path.join(os.getcwd(), ".export.new")
    for fine in (None, [], ["saved_model.pb", "variables/", "assets/", "fingerprint.pb"]):
        check_export_folder("gs://b/e", fine)  # no folder, an empty one, an earlier export
    with pytest.raises(StorageError) as refused:
        check_export_folder("gs://b/e", ["notes.txt", "b/", "c", "d"])
    assert str(refused.value) == (
        "export_dir gs://b/e holds other files (b, c, d and 1 more), not a SavedModel: the "
        "export replaces the whole folder, so give an empty or new folder."
    )


def test_a_cache_folder_is_made_once_whole_and_a_lost_race_keeps_the_winners(tmp_path):
    from trainer.common.files import folder_made_once

    made = []

    def make(tmp, name="a"):
        made.append(tmp)
        os.makedirs(tmp)
        open(os.path.join(tmp, name), "w").close()

    final = str(tmp_path / "cache" / "set")
    assert folder_made_once(final, make) == final and os.listdir(final) == ["a"]
    assert folder_made_once(final, make) == final and len(made) == 1  # there: not made again
    assert sorted(os.listdir(tmp_path / "cache")) == ["set"]  # its temporary name is gone

    def broken(tmp):
        make(tmp)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        folder_made_once(str(tmp_path / "cache" / "other"), broken)
    assert sorted(os.listdir(tmp_path / "cache")) == ["set"]  # a failed make leaves nothing

    def raced(tmp):  # another process renames its copy into place while this one writes
        make(tmp, "mine")
        os.makedirs(tmp_path / "cache" / "third")
        (tmp_path / "cache" / "third" / "theirs").write_text("x")

    assert folder_made_once(str(tmp_path / "cache" / "third"), raced).endswith("third")
    assert os.listdir(tmp_path / "cache" / "third") == ["theirs"]
    assert sorted(os.listdir(tmp_path / "cache")) == ["set", "third"]
