"""CSV-of-pairs converter: real PNG/JPEG files in, verified TFRecords out."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import DataError, convert, reader, schema
from trainer.data.__main__ import main as data_main
from trainer.data.source import open_source


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
        for x, y in reader.eval_dataset(open_source(out, split), 4):
            for a, b, label in zip(x["input1"].numpy(), x["input2"].numpy(), y.numpy()):
                i = int(round(a.mean() * 255)) // 10
                assert round(b.mean() * 255) == 10 * i + 5 and label == i % 2
                seen[i] = split
    assert sorted(seen) == list(range(10))
    assert list(seen.values()).count("eval") == 2


def test_convert_resizes_and_reencodes(tmp_path):
    pairs = _csv(tmp_path, 4, fmt="jpeg", sizes={1: 12})
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="differ in size"):
        convert.convert(pairs, out, eval_fraction=0.0)
    assert not tf.io.gfile.exists(out)
    info = convert.convert(pairs, out, eval_fraction=0.0, encoding="raw", image_size=16)
    assert (info.height, info.width, info.encoding) == (16, 16, "raw")
    ((x, y),) = reader.eval_dataset(open_source(out), 4).take(1)
    assert x["input1"].shape == (4, 16, 16, 3)


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
    assert not out.exists()


def test_bad_csv_lines(tmp_path):
    (tmp_path / "p.csv").write_text("a.png,b.png,1\nonly,two\nx.png,y.png,maybe\n")
    with pytest.raises(DataError, match="line 2: expected 3 fields.*line 3: label 'maybe'"):
        convert.read_pairs_csv(str(tmp_path / "p.csv"))
    with pytest.raises(DataError, match="does not exist"):
        convert.read_pairs_csv(str(tmp_path / "none.csv"))


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
