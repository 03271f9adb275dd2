"""A trainer process's start, in fresh processes (the process is the subject): a bad flag
answered before TensorFlow loads, TensorFlow loaded with the collector paused, NumPy's BLAS
pool of one thread."""

import os
import subprocess

from tests.runs import PY


def test_bad_flag_is_answered_before_tensorflow_loads():
    script = (
        "import sys, runpy\n"
        "sys.argv = ['trainer', '--global_batch_size=-4']\n"
        "try:\n"
        "    runpy.run_module('trainer', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'tensorflow' in sys.modules)\n"
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    assert r.stdout.split() == ["1", "False"], r.stdout + r.stderr[-2000:]
    assert "--global_batch_size=-4 is invalid" in r.stderr


def test_tensorflow_loads_with_the_collector_paused_and_leaves_it_as_it_was():
    """load_tensorflow freezes what TensorFlow's import made (later collections skip it) and
    turns the collector back on: left off, every reference cycle of a long run would stay.
    It loads Keras without matplotlib, which a later import (trainer.report's) still finds."""
    script = (
        "import gc, sys\n"
        "from trainer.common import console\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
        "console.load_tensorflow()\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 100_000, 'tensorflow' in sys.modules)\n"
        "print('keras' in sys.modules, 'matplotlib' in sys.modules)\n"
        "from keras.src.visualization import plot_image_gallery\n"
        "import matplotlib.pyplot\n"
        "print(plot_image_gallery.plt is None, matplotlib.pyplot.figure is not None)\n"
        "gc.disable()\n"
        "with console._collector_paused():\n"
        "    print(gc.isenabled())\n"
        "print(gc.isenabled())\n"
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    assert r.stdout.split() == [
        *("True", "0", "True", "True", "True"),
        *("True", "False", "True", "True"),  # Keras loaded, matplotlib not; found later
        *("False", "False"),
    ], r.stdout + r.stderr[-2000:]


def test_numpy_gets_one_blas_thread_unless_the_user_chose():
    """The package's import sets OPENBLAS_NUM_THREADS before NumPy loads (NumPy's BLAS pool
    would be one spin-waiting thread per core, and nothing here uses it); a user's value wins.
    Threads counted from /proc: the process's own and OpenBLAS's, before TensorFlow loads."""
    script = (
        "import os, trainer, numpy\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    ours = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env)
    theirs = subprocess.run(
        [PY, "-c", script], capture_output=True, text=True, env={**env, "OPENBLAS_NUM_THREADS": "2"}
    )
    assert ours.stdout.split() == ["1", "1"], ours.stdout + ours.stderr[-2000:]
    setting, threads = theirs.stdout.split()
    assert setting == "2" and int(threads) == min(2, os.cpu_count()), theirs.stdout
