"""CSV-of-pairs converter: real PNG/JPEG files in, verified TFRecords out."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import DataError, schema
from trainer.data.__main__ import main as data_main
from trainer.data.read import pipeline
from trainer.data.read.source import open_source
from trainer.data.write import convert, pairs_csv


def _image(path, value, fmt, size=8):
    img = np.full((size, size, 3), value, np.uint8)
    data = tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img, quality=100)
    path.write_bytes(data.numpy())


def _csv(tmp_path, n, fmt="png", sizes=None):
    rows = ["image_a,image_b,label"]
    for i in range(n):
        size = (sizes or {}).get(i, 8)
        _image(tmp_path / f"a{i}.{fmt}", 10 * i, fmt, size)
        _image(tmp_path / f"b{i}.{fmt}", 10 * i + 5, fmt, size)
        rows.append(f"a{i}.{fmt},b{i}.{fmt},{i % 2}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "pairs.csv")


def test_convert_keeps_png_and_splits(tmp_path):
    pairs = _csv(tmp_path, 10)
    out = str(tmp_path / "out")
    info = convert.convert(pairs, out, eval_fraction=0.2, num_shards=2)
    assert info.counts == {"train": 8, "eval": 2} and info.encoding == "png"
    seen = {}
    for split in ("train", "eval"):
        for x, y in pipeline.eval_dataset(open_source(out, split), 4):
            for a, b, label in zip(x["input1"].numpy(), x["input2"].numpy(), y.numpy()):
                i = int(round(a.mean() * 255)) // 10
                assert round(b.mean() * 255) == 10 * i + 5 and label == i % 2
                seen[i] = split
    assert sorted(seen) == list(range(10))
    assert list(seen.values()).count("eval") == 2


def test_convert_resizes_and_reencodes(tmp_path):
    pairs = _csv(tmp_path, 4, fmt="jpeg", sizes={1: 12})
    out = str(tmp_path / "out")
    info = convert.convert(pairs, out, eval_fraction=0.0, encoding="raw", image_size=16)
    assert (info.height, info.width, info.encoding) == (16, 16, "raw")
    ((x, y),) = pipeline.eval_dataset(open_source(out), 4).take(1)
    assert x["input1"].shape == (4, 16, 16, 3)
    # keep, sizes 8 (three pairs) and 12 (one): resized to the most common, said in one line
    notes = []
    info = convert.convert(pairs, str(tmp_path / "k"), eval_fraction=0.0, say=notes.append)
    assert (info.height, info.width, info.encoding) == (8, 8, "png")
    assert notes == [
        "re-encoding as PNG at 8x8: the images come in 2 sizes and 8x8 is the most common "
        "(--image_size and --encoding pick others)."
    ]
    grey = [round(v * 255) for x, _ in pipeline.eval_dataset(open_source(str(tmp_path / "k")), 4)
            for v in x["input1"].numpy().mean(axis=(1, 2, 3))]  # fmt: skip
    assert [abs(g - 10 * i) <= 2 for i, g in enumerate(grey)] == [True] * 4
    with pytest.raises(DataError, match="differ in size: pass --image_size, so that every"):
        convert.convert(pairs, str(tmp_path / "s"), eval_fraction=0.0, num_workers=2)
    assert not tf.io.gfile.exists(str(tmp_path / "s"))


def test_missing_and_unreadable_images_are_all_reported_first(tmp_path, capsys):
    pairs = _csv(tmp_path, 5)
    (tmp_path / "a1.png").unlink()
    (tmp_path / "b3.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = data_main(["convert", "--pairs", pairs, "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 images are missing or unreadable, nothing was written" in err
    assert "row 3 image_a" in err and "a1.png: file not found" in err
    assert "row 5 image_b" in err and "not a PNG or JPEG file" in err
    # relative paths: the message says where they were looked for
    assert (
        f"relative paths are read from the CSV's folder, e.g. 'a1.png' as {tmp_path}/a1.png" in err
    )
    assert not out.exists()


def test_bad_csv_lines(tmp_path):
    (tmp_path / "p.csv").write_text("a.png,b.png,1\nonly,two\nx.png,y.png,maybe\n")
    with pytest.raises(DataError, match="line 2: expected 3 fields.*line 3: label 'maybe'"):
        pairs_csv.read_pairs_csv(str(tmp_path / "p.csv"))
    with pytest.raises(DataError, match="does not exist"):
        pairs_csv.read_pairs_csv(str(tmp_path / "none.csv"))


def test_dataset_json_is_written_last(tmp_path, monkeypatch):
    pairs = _csv(tmp_path, 4)
    order = []
    real_rename = tf.io.gfile.rename
    monkeypatch.setattr(
        tf.io.gfile,
        "rename",
        lambda a, b, overwrite=False: (order.append(b), real_rename(a, b, overwrite)),
    )
    convert.convert(pairs, str(tmp_path / "o"), eval_fraction=0.25, num_shards=2)
    assert order[-1].endswith(schema.METADATA_FILE) and len(order) == 4


def _mixed_csv(tmp_path, n=24):
    """Photo-like pairs of 20-40 px, PNG and JPEG, some grayscale (bench/convert.py's kind)."""
    from trainer.data.write.synthetic import photo_like_image

    rng = np.random.default_rng(7)
    rows = ["image_a,image_b,label"]
    for i in range(n):
        names = []
        for side in "ab":
            h, w = (int(x) for x in rng.integers(20, 41, 2))
            img = photo_like_image(rng, h, w, gray=i % 5 == 0)
            fmt = "png" if (i + (side == "b")) % 2 else "jpeg"
            data = tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img, quality=90)
            (tmp_path / f"{i}{side}.{fmt}").write_bytes(data.numpy())
            names.append(f"{i}{side}.{fmt}")
        rows.append(f"{names[0]},{names[1]},{i % 2}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "pairs.csv")


def _shards(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tfrecord"))}


def _parsed(folder, split):
    out = []
    for path in sorted(folder.glob(f"{split}-*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)):
            f = tf.io.parse_single_example(record, schema.FEATURES)
            out.append(
                (
                    f["pair_id"].numpy().decode(),
                    int(f["label"]),
                    tf.io.decode_png(f["image_a"]).numpy(),
                    tf.io.decode_png(f["image_b"]).numpy(),
                )
            )
    return out


def test_parallel_conversion_equals_the_serial_order_and_the_images(tmp_path):
    pairs = _mixed_csv(tmp_path)
    notes = []
    common = dict(eval_fraction=0.25, num_shards=3, image_size=16, say=notes.append)
    serial = convert.convert(pairs, str(tmp_path / "serial"), parallelism=1, **common)
    parallel = convert.convert(pairs, str(tmp_path / "parallel"), **common)  # every core
    # --encoding keep with --image_size re-encodes as PNG, and says so in one line
    assert notes == [notes[0]] * 2 and notes[0].startswith("re-encoding as PNG")
    assert serial == parallel and serial.encoding == "png" and serial.channels == 3
    assert _shards(tmp_path / "serial") == _shards(tmp_path / "parallel")  # byte for byte
    rows = {r.line: r for r in pairs_csv.read_pairs_csv(pairs)}
    for split in ("train", "eval"):
        got = _parsed(tmp_path / "parallel", split)
        lines = [int(pid.split(":line")[1]) for pid, *_ in got]
        assert lines == sorted(lines) and all(pid.startswith(split) for pid, *_ in got)
        for (_, label, a, b), line in zip(got, lines):
            row = rows[line]
            assert label == row.label
            for image, path in ((a, row.image_a), (b, row.image_b)):
                # an independent resize of the source image: the same picture within rounding
                # and filter differences, and unlike any other pair's
                ref = tf.image.resize(
                    tf.io.decode_image(open(path, "rb").read(), channels=3), (16, 16),
                    antialias=True,
                ).numpy()  # fmt: skip
                assert image.shape == (16, 16, 3)
                assert np.abs(image - ref).mean() < 6.0, (path, np.abs(image - ref).mean())
    assert sum(len(_parsed(tmp_path / "serial", s)) for s in ("train", "eval")) == 24


def test_two_slices_and_finalize_equal_one_run(tmp_path, capsys):
    pairs = _csv(tmp_path, 13)
    flags = ["convert", "--pairs", pairs, "--num_shards", "4", "--eval_fraction", "0.3"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert data_main([*flags, "--output_dir", str(one)]) == 0
    part = ["--num_workers", "2", "--output_dir", str(two)]
    assert data_main([*flags, *part, "--worker_index", "1"]) == 0
    assert "part written; the last worker to finish writes dataset.json" in capsys.readouterr().out
    assert not (two / schema.METADATA_FILE).exists()
    with pytest.raises(DataError, match="not a finished dataset"):
        open_source(str(two))  # no training on half a dataset
    assert data_main(["finalize", str(two)]) == 1
    assert "parts of workers 0 (of 2) are missing" in capsys.readouterr().err
    assert data_main([*flags, *part, "--worker_index", "0"]) == 0  # the last one finalizes
    assert "every part is there; dataset.json written" in capsys.readouterr().out
    assert _shards(one) == _shards(two) and len(_shards(one)) == 8
    assert schema.read_info(str(one)) == schema.read_info(str(two))
    (two / schema.METADATA_FILE).unlink()  # the explicit command gives the same
    assert data_main(["finalize", str(two)]) == 0
    counts = schema.read_info(str(one)).counts
    assert capsys.readouterr().out == (
        f"finalized {two}: {counts['train']} training and {counts['eval']} eval pairs (png)\n"
    )
    assert schema.read_info(str(one)) == schema.read_info(str(two))
    assert data_main([*flags, *part, "--worker_index", "0"]) == 1  # a finished folder is refused
    assert "already holds a dataset" in capsys.readouterr().err


def test_slices_that_disagree_are_not_finalized(tmp_path, capsys):
    pairs = _csv(tmp_path, 8)
    out = str(tmp_path / "out")
    base = ["convert", "--pairs", pairs, "--output_dir", out, "--num_workers", "2"]
    assert data_main([*base, "--worker_index", "0", "--encoding", "raw"]) == 0
    assert data_main([*base, "--worker_index", "1"]) == 1  # keeps PNG: the parts differ
    err = capsys.readouterr().err
    assert "the parts disagree on encoding (worker 0: raw, worker 1: png)" in err
    assert not (tmp_path / "out" / schema.METADATA_FILE).exists()
    assert data_main([*base, "--worker_index", "2"]) == 1
    assert "worker_index=2 is outside [0, 2)" in capsys.readouterr().err


def test_an_image_that_fails_to_decode_is_named_and_nothing_is_written(tmp_path):
    pairs = _csv(tmp_path, 6)
    good = (tmp_path / "b4.png").read_bytes()
    (tmp_path / "b4.png").write_bytes(good[: len(good) // 2])  # header intact, body cut
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"1 images failed to decode, nothing was written: row 6"):
        convert.convert(pairs, str(out), eval_fraction=0.0, num_shards=2)
    assert not out.exists()


def test_keep_mixing_png_and_jpeg_reencodes_as_png(tmp_path):
    pairs = _csv(tmp_path, 4)
    text = (tmp_path / "pairs.csv").read_text().replace("a1.png", "a1.jpeg")
    _image(tmp_path / "a1.jpeg", 10, "jpeg")
    (tmp_path / "pairs.csv").write_text(text)
    notes = []
    info = convert.convert(pairs, str(tmp_path / "o"), eval_fraction=0.0, say=notes.append)
    assert info.encoding == "png" and notes == [
        "re-encoding as PNG: the images mix PNG and JPEG (--encoding picks another)."
    ]
    ids = [i for x, _ in pipeline.eval_dataset(open_source(str(tmp_path / "o")), 4)
           for i in (x["input1"].numpy().mean(axis=(1, 2, 3)) * 255).round()]  # fmt: skip
    assert ids == [0, 10, 20, 30]
