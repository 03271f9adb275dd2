"""The exported SavedModel: served by a fresh process that cannot import this package (and
TensorFlow's saved_model_cli), equal to the model in this process, predict and inspect on it,
and --mode=export of a run's newest checkpoint."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.inprocess import run_in_process
from tests.runs import PY, train_here
from trainer.data.write.synthetic import make_pair
from trainer.run.programs import build_model


def _png(image):
    return tf.io.encode_png(image).numpy()


def _served_without_this_package(export, folder, size: int) -> dict:
    """In a fresh process that cannot import this package (only TensorFlow and the
    SavedModel): serving_default's probabilities for the PNG pairs a<i>.png, b<i>.png (i < 4)
    in ``folder``, the embedding's shape, the signature names, and then TensorFlow's own
    ``saved_model_cli show --all`` on it (its console script's main: one TensorFlow start
    for both clients)."""
    script = (
        # The collector paused while TensorFlow loads: 1.3 CPU-s less (trainer.common.console)
        "import gc, sys, json; sys.modules['trainer'] = None; gc.disable()\n"
        "import tensorflow as tf\n"
        "gc.enable()\n"
        f"m = tf.saved_model.load({str(export)!r})\n"
        "f = m.signatures['serving_default']\n"
        f"read = lambda p: open({str(folder)!r} + '/' + p, 'rb').read()\n"
        "a = tf.constant([read(f'a{i}.png') for i in range(4)])\n"
        "b = tf.constant([read(f'b{i}.png') for i in range(4)])\n"
        "out = f(input1=a, input2=b)['probability'].numpy()[:, 0].tolist()\n"
        f"emb = m.signatures['embedding'](image=tf.zeros([2, {size}, {size}, 3]))['embedding']\n"
        "print('SERVED ' + json.dumps({'p': out, 'emb': list(emb.shape),"
        " 'sigs': sorted(m.signatures)}))\n"
        "from tensorflow.python.tools.saved_model_cli import main\n"
        f"sys.argv = ['saved_model_cli', 'show', '--dir', {str(export)!r}, '--all']\n"
        "sys.stdout.flush(); main()\n"
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True, cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    served, cli = r.stdout.split("SERVED ", 1)[1].split("\n", 1)  # what follows: the CLI's
    return {**json.loads(served), "cli": cli}


def test_serving_signature_matches_in_process_model(main_job, tmp_path):
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    model_dir, export = main_job.model_dir, main_job.export_dir
    from trainer.run import checkpoint

    model_cfg = checkpoint.load_model_config(str(model_dir))
    size = model_cfg.image_size[0]
    model = build_model(model_cfg)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(checkpoint.checkpoint_dir(str(model_dir)))
    ).expect_partial()
    pairs = [make_pair(size, 3, 99, i)[:2] for i in range(4)]
    x1 = np.stack([a for a, _ in pairs]).astype("float32") / 255
    x2 = np.stack([b for _, b in pairs]).astype("float32") / 255
    expected = model({"input1": x1, "input2": x2}).numpy()[:, 0]
    assert np.ptp(expected) > 0.01  # distinct pairs, distinct scores: the comparison bites
    # Each weight saved once (Keras' ExportArchive kept two copies of each: twice the bytes).
    saved = tf.train.load_checkpoint(str(export / "variables/variables"))
    sizes = [
        int(np.prod(shape))
        for name, shape in saved.get_variable_to_shape_map().items()
        if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    ]
    assert len(sizes) == len(model.weights) and sum(sizes) == model.count_params()
    for i, (a, b) in enumerate(pairs):
        (tmp_path / f"a{i}.png").write_bytes(_png(a))
        (tmp_path / f"b{i}.png").write_bytes(_png(b))
    got = _served_without_this_package(export, tmp_path, size)
    np.testing.assert_allclose(got["p"], expected, atol=1e-5)
    assert got["emb"] == [2, 100]
    assert got["sigs"] == ["embedding", "serving_default", "serving_float"]
    assert "serving_default" in got["cli"] and "DT_STRING" in got["cli"]  # saved_model_cli
    # (The predict CLI on image files: tests/test_predict.py, and on gs:// in tests/test_gcs.py.)
    # inspect writes a grid of both towers' activations (its process: tests/test_gcs.py).
    from trainer.tools import activations

    grid = tmp_path / "grid.png"
    i = run_in_process(
        activations.main,
        "trainer.inspect",
        f"--model_dir={model_dir}",
        f"--output={grid}",
        tmp_path / "a0.png",
        tmp_path / "b0.png",
    )
    assert i.returncode == 0, i.stderr[-2000:]
    assert abs(float(i.stdout.split()[1].rstrip(";")) - expected[0]) < 1e-5
    img = tf.io.decode_png(grid.read_bytes()).numpy()
    assert img.shape[0] == 28 * 34  # 14 layers x 2 inputs, 32 px cells + borders


def test_export_mode_from_latest_checkpoint(main_job, tmp_path, monkeypatch):
    empty, cache = tmp_path / "empty", tmp_path / "cache"
    for mode in ("export", "evaluate"):  # refused before any data is read or anything written
        env = {**main_job.env, "XDG_CACHE_HOME": str(cache)}  # where the built-in set would go
        r = train_here(f"--model_dir={empty}", f"--mode={mode}", env=env)
        assert r.returncode == 1, r.stderr[-2000:]
        said = f"--mode={mode}: {empty} has no checkpoint (the folder does not exist)."
        assert r.stderr.strip().splitlines()[-1] == f"error: {said}"
        assert not empty.exists() and not cache.exists()
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    out = tmp_path / "out"
    before = sorted(os.listdir(main_job.model_dir / "checkpoints"))
    r = train_here(
        f"--model_dir={main_job.model_dir}",
        "--mode=export",
        f"--export_dir={out}",
        env=main_job.env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    steps = json.loads((main_job.model_dir / "eval/last.json").read_text())["step"]
    assert f"restored {main_job.model_dir}/checkpoints/ckpt-{steps}" in r.stderr
    assert not re.search(r"step \d+/", r.stderr)  # no training
    assert sorted(os.listdir(main_job.model_dir / "checkpoints")) == before
    first = tf.saved_model.load(str(main_job.export_dir)).signatures["serving_float"]
    again = tf.saved_model.load(str(out)).signatures["serving_float"]
    size = json.loads((main_job.model_dir / "config.json").read_text())["image_size"][0]
    x = tf.random.uniform([2, size, size, 3], seed=1)
    want = first(input1=x, input2=x)["probability"]
    np.testing.assert_array_equal(want, again(input1=x, input2=x)["probability"])
    export_args = (f"--model_dir={main_job.model_dir}", "--mode=export", f"--export_dir={out}")
    # An export cut off halfway (here: the disk fills) leaves the earlier export as it was:
    # the new one is written beside it and swapped in only when whole.
    from trainer.run import modes

    def cut_off(model, config, path):
        os.makedirs(path)
        (Path(path) / "saved_model.pb").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modes, "write_export", cut_off)
    r = train_here(*export_args, env=main_job.env)
    assert r.returncode != 0 and "No space left on device" in r.stderr, r.stderr[-2000:]
    monkeypatch.undo()
    kept = tf.saved_model.load(str(out)).signatures["serving_float"]
    np.testing.assert_array_equal(want, kept(input1=x, input2=x)["probability"])
    r = train_here(*export_args, env=main_job.env)  # and the next export replaces it whole
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.new, no .out.old
    # A folder of other files is refused before anything is read: the export replaces it.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    r = train_here(*export_args[:2], f"--export_dir={other}", env=main_job.env)
    assert r.returncode == 1 and list(other.iterdir()) == [other / "a.txt"], r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: export_dir {other} holds other files (a.txt), not a SavedModel: the export "
        "replaces the whole folder, so give an empty or new folder."
    )
