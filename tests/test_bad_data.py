"""Bad data named exactly: a bad record by file and index (each way a record can be bad), a
truncated or corrupt file, --skip_corrupt's counts, an empty pattern or missing folder, and
the parse eager and in tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from tests import datagen
from trainer.common.graph import graph_fn
from trainer.config import DataConfig
from trainer.data import DataError, check_local_data, schema
from trainer.data.read import decode, pipeline, verify
from trainer.data.read.source import open_source


def _example_without(key):
    a, b = datagen.pair_pixels(0)
    ex = tf.train.Example.FromString(
        schema.encode_pair(a.tobytes(), b.tobytes(), 0, 8, 8, 3, "raw")
    )
    del ex.features.feature[key]
    return ex.SerializeToString()


BAD_RECORDS = {
    "not_an_image": (
        "png",
        lambda: schema.encode_pair(b"hello", b"world", 0, 8, 8, 3, "png"),
        "Unknown image file format",
    ),
    "wrong_size": (
        "png",
        lambda: datagen.good_records(1, size=6, encoding="png")[0],
        "height/width/channels are not 8/8/3",
    ),
    "pixels_smaller_than_declared": (
        "png",
        lambda: schema.encode_pair(
            *(datagen.writer.encode_image(np.zeros((6, 6, 3), np.uint8), "png"),) * 2,
            0,
            8,
            8,
            3,
            "png",
        ),
        "image size is not 8x8",
    ),
    "raw_wrong_length": (
        "raw",
        lambda: schema.encode_pair(b"\0" * 10, b"\0" * 192, 0, 8, 8, 3, "raw"),
        "raw image bytes are not 8x8x3 uint8",
    ),
    "missing_key": ("raw", lambda: _example_without("image_b"), "image_b"),
    "label_out_of_range": (
        "raw",
        lambda: schema.encode_pair(b"\0" * 192, b"\0" * 192, 5, 8, 8, 3, "raw"),
        "label is outside [0, 1]",
    ),
}


def _dataset_with_bad_record(tmp_path, encoding, bad, at=5):
    records = datagen.good_records(8, encoding=encoding)
    records[at] = bad
    return datagen.write_pairs(str(tmp_path), 8, 1, encoding=encoding, records=records)


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_is_named_by_file_and_index(tmp_path, case):
    encoding, make, reason = BAD_RECORDS[case]
    (path,) = _dataset_with_bad_record(tmp_path, encoding, make())
    source = open_source(str(tmp_path))
    ds, _ = pipeline.train_dataset(source, DataConfig(seed=0), batch_size=8)
    with pytest.raises(tf.errors.OpError):
        next(iter(ds))
    problem = verify.locate_first_bad(source)
    assert problem.startswith(f"{path} record 5: ")
    assert reason in problem


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_truncated_or_corrupt_file_is_named(tmp_path, how):
    paths = datagen.write_pairs(str(tmp_path), 12, 2)
    datagen.corrupt(paths[1], how)
    # The start checks walk the frames and see the cut (or the flipped length field).
    with pytest.raises(DataError, match=r"cut off or damaged at record [2-4] of its 6: copy"):
        open_source(str(tmp_path), skip_corrupt=False)
    source = open_source(str(tmp_path), skip_corrupt=True)
    problem = verify.locate_first_bad(source)
    assert problem.startswith(f"{paths[1]} record ")
    index = int(problem.split(" record ")[1].split(":")[0])
    assert 2 <= index <= 4  # the file holds records 0..5; the damage is past its first third
    assert "truncated or corrupt" in problem or "ends after" in problem
    ds, _ = pipeline.train_dataset(source, DataConfig(seed=0), batch_size=4)
    with pytest.raises(tf.errors.OpError):  # the reader refuses it too, never a short epoch
        datagen.ids_of(ds, 6)


def test_skip_corrupt_counts_and_skips_exactly(tmp_path):
    records = datagen.good_records(10)
    records[2] = schema.encode_pair(b"\0", b"\0", 0, 8, 8, 3, "raw")
    records[7] = schema.encode_pair(b"\0" * 192, b"\0" * 192, 9, 8, 8, 3, "raw")
    datagen.write_pairs(str(tmp_path), 10, 2, records=records)
    source = open_source(str(tmp_path))
    ds, skipped = pipeline.train_dataset(
        source, DataConfig(seed=0, skip_corrupt=True), batch_size=1
    )
    assert len(skipped) == 2
    assert "record 2: raw image bytes" in skipped[0] and "record 2: label" in skipped[1]
    ids = sum(datagen.ids_of(ds, 16), [])
    assert sorted(ids[:8]) == [0, 1, 3, 4, 5, 6, 8, 9]  # one epoch = the 8 good pairs
    assert sorted(ids[8:16]) == [0, 1, 3, 4, 5, 6, 8, 9]


def test_skip_corrupt_with_truncated_file(tmp_path):
    paths = datagen.write_pairs(str(tmp_path), 12, 2)
    datagen.corrupt(paths[1], "truncated")
    source = open_source(str(tmp_path), skip_corrupt=True)
    ds, skipped = pipeline.train_dataset(
        source, DataConfig(seed=0, skip_corrupt=True), batch_size=1
    )
    readable = verify.scan_file(paths[1], source.spec, "", declared=6).truncated_at
    assert len(skipped) == 1 and f"records {readable} onwards" in skipped[0]
    per_epoch = 6 + readable
    ids = sum(datagen.ids_of(ds, 2 * per_epoch), [])
    expected = list(range(6)) + list(range(6, 6 + readable))
    assert sorted(ids[:per_epoch]) == sorted(ids[per_epoch:]) == expected


def test_empty_pattern_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no files match .*nothing-\\*"):
        open_source(str(tmp_path / "nothing-*"))
    with pytest.raises(DataError, match="does not exist"):
        open_source(str(tmp_path / "absent"))
    (tmp_path / "half").mkdir()  # nothing of a dataset in it: how to make one
    with pytest.raises(DataError, match="half holds no dataset .*trainer.data convert --pairs"):
        open_source(str(tmp_path / "half"))
    (tmp_path / "half" / schema.shard_name("train", 0, 1, False)).write_bytes(b"")
    with pytest.raises(DataError, match="dataset.json does not exist: .* rerun it"):
        open_source(str(tmp_path / "half"))  # shards without dataset.json: a half-written set
    (tmp_path / "pairs.csv").write_text("a.png,b.png,1\n")
    with pytest.raises(DataError, match="CSV file: .*convert --pairs .*pairs.csv --output_dir DIR"):
        open_source(str(tmp_path / "pairs.csv"))
    (tmp_path / "notes.txt").write_text("not records")
    with pytest.raises(DataError, match="notes.txt is a file: give the dataset's folder"):
        open_source(str(tmp_path / "notes.txt"))
    # The check without TensorFlow (the trainer's and launch local's, before TensorFlow loads)
    # refuses the same four in the reader's words, and lets through what only the reader can
    # judge.
    for absent in ("nothing-*", "absent", "pairs.csv", "notes.txt"):
        with pytest.raises(DataError) as read:
            open_source(str(tmp_path / absent))
        with pytest.raises(DataError) as checked:
            check_local_data(str(tmp_path / absent))
        assert str(checked.value) == str(read.value)
    (tmp_path / "half" / "x.tfrecord").write_bytes(b"")
    for there in ("half", "half/*.tfrecord", "half/x.tfrecord", ""):
        check_local_data(str(tmp_path / there) if there else there)  # passes
    check_local_data("gs://bucket/absent")


def test_parse_works_eagerly_and_in_tf_data(tmp_path):
    """A known batch size decodes with one op per image, an unknown one (eval's last batch)
    with a loop: both give the eager result, and both name a wrong image size."""
    recs = datagen.good_records(4, encoding="png")
    spec = decode.ImageSpec(8, 8, 3, "png")
    eager = decode.parse_pair_batch(tf.constant(recs), spec)
    parse = graph_fn(lambda s: decode.parse_pair_batch(s, spec))  # as the reader maps it
    known = next(iter(tf.data.Dataset.from_tensors(tf.constant(recs)).map(parse)))
    unknown_ds = tf.data.Dataset.from_tensor_slices(recs).batch(3).map(parse)
    assert unknown_ds.element_spec[0].shape[0] is None
    unknown = [tf.concat(t, 0) for t in zip(*[tuple(b) for b in unknown_ds])]
    for e, k, u in zip(eager, known, unknown):
        np.testing.assert_array_equal(e.numpy(), k.numpy())
        np.testing.assert_array_equal(e.numpy(), u.numpy())
    assert eager[0].shape == (4, 8, 8, 3) and eager[0].dtype == tf.uint8
    assert int(tf.reduce_max(eager[0])) > 0  # real pixels, not zeros
    small = BAD_RECORDS["pixels_smaller_than_declared"][1]()
    for ds in (
        tf.data.Dataset.from_tensors(tf.constant(recs[:2] + [small])).map(parse),
        tf.data.Dataset.from_tensor_slices(recs[:2] + [small]).batch(3).map(parse),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="image size is not 8x8"):
            next(iter(ds))
