"""Shared measuring code for the bench scripts (not tests): every figure a script prints is
measured side by side with its comparison, in one process on one machine.

Throughput is pairs per second over timed steps after warm-up steps (tracing, compilation and
the first tf.data fills are not counted).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.common.files import folder_made_once  # noqa: E402
from trainer.config import (
    DataConfig,
    ModelConfig,  # noqa: E402
)
from trainer.data.read import pipeline  # noqa: E402
from trainer.data.read.source import open_source  # noqa: E402
from trainer.data.write.synthetic import write_synthetic  # noqa: E402
from trainer.model import builders as model_lib  # noqa: E402
from trainer.run import steps as steps_lib  # noqa: E402
from trainer.run.programs import build_model_and_optimizer  # noqa: E402

CACHE = os.path.join(tempfile.gettempdir(), "inception-pair-bench")


def dataset_dir(size: int, encoding: str, num_train: int) -> str:
    """A synthetic set for (size, encoding), written once per machine into a temp folder."""
    path = os.path.join(CACHE, f"syn-{size}-{encoding}-{num_train}")
    return folder_made_once(
        path,
        lambda tmp: write_synthetic(
            tmp, num_train=num_train, num_eval=64, image_size=size, encoding=encoding, num_shards=8
        ),
    )


def model_config(size: int, precision: str) -> ModelConfig:
    return ModelConfig(precision=precision, image_size=(size, size), channels=3)


def in_memory_arrays(size: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1 = rng.random((n, size, size, 3), dtype=np.float32)
    x2 = rng.random((n, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 2, n).astype(np.int32)
    return x1, x2, y


def in_memory_dataset(size: int, batch: int):
    x1, x2, y = in_memory_arrays(size, batch * 8)
    ds = tf.data.Dataset.from_tensor_slices(({"input1": x1, "input2": x2}, y))
    return ds.repeat().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def decoded_in_memory(path: str, batch: int, batches: int = 16):
    """The first ``batches`` batches of the streamed dataset, decoded, held as tensors and
    repeated: the same pixels as streaming, without reading or decoding."""
    taken = list(streaming_dataset(path, batch).take(batches))
    x = {k: tf.concat([b[0][k] for b in taken], 0) for k in ("input1", "input2")}
    y = tf.concat([b[1] for b in taken], 0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def cpu_seconds() -> float:
    """CPU time of this process (all threads), user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pipeline_cpu_per_pair(path: str, batch: int, batches: int, warmup: int = 5) -> float:
    """CPU seconds the input pipeline spends per pair, measured on one thread (so the
    figure is work done, not how it is spread over cores)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    it = iter(streaming_dataset(path, batch).with_options(options))
    for _ in range(warmup):
        next(it)
    start = cpu_seconds()
    for _ in range(batches):
        next(it)
    return (cpu_seconds() - start) / (batches * batch)


def streaming_dataset(path: str, batch: int, cache: bool = False):
    ds, _ = pipeline.train_dataset(
        open_source(path), DataConfig(seed=0, cache=cache), batch_size=batch
    )
    return ds


def _strategy():
    gpu = tf.config.list_physical_devices("GPU")
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpu else "/cpu:0")


def trainer_rates(
    datasets: dict,
    size: int,
    batch: int,
    precision: str,
    jit: bool,
    steps: int,
    rounds: int = 3,
    warmup: int = 5,
    others: dict | None = None,
    plan: str | None = None,
) -> dict:
    """Pairs/s of the trainer's own compiled step (trainer.run.steps) on each of ``datasets``.

    One model and one compiled step serve every dataset; the datasets take turns for
    ``rounds`` rounds of ``steps`` steps and each gets its median, so neither gains from
    going first or from a quieter moment of the machine. ``others`` ({name: fn() -> value},
    e.g. a Keras fit epoch or a matmul peak) take their turn in every round too, so a ratio
    can be taken round by round (``paired_ratio``) under the same machine conditions.
    """
    strategy = _strategy()
    model, optimizer = build_model_and_optimizer(strategy, model_config(size, precision), 1e-3)
    loop = steps_lib.make_train_loop(
        strategy=strategy,
        model=model,
        optimizer=optimizer,
        global_batch=batch,
        plan=plan or ("forward_backward" if jit else "none"),
        loss_scale=precision == "mixed_float16",
    )
    its = {k: iter(strategy.experimental_distribute_dataset(d)) for k, d in datasets.items()}
    stop, one = tf.constant(0.0), tf.constant(1)

    def step(it):  # the trainer with --steps_per_loop=1, less its host read-back
        return loop(it, one, stop).sums.loss

    for it in its.values():
        for _ in range(warmup):
            step(it).numpy()
    others = others or {}
    samples = {k: [] for k in [*its, *others]}
    cpu = {k: [] for k in its}
    for _ in range(rounds):
        for name, it in its.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            for _ in range(steps):
                out = step(it)
            out.numpy()
            samples[name].append(steps * batch / (time.perf_counter() - start))
            cpu[name].append((cpu_seconds() - start_cpu) / (steps * batch))
        for name, measure in others.items():
            samples[name].append(measure())
    keras.mixed_precision.set_global_policy("float32")
    ROUNDS.clear()
    ROUNDS.update(samples)
    for k, v in samples.items():
        SPREAD[k] = (max(v) - min(v)) / float(np.median(v))  # noise of this measurement
    for k, v in cpu.items():
        CPU_PER_PAIR[k] = float(np.median(v))
    return {k: float(np.median(v)) for k, v in samples.items()}


SPREAD: dict = {}  # (max - min) / median of the last trainer_rates' rounds, per name
CPU_PER_PAIR: dict = {}  # CPU seconds per trained pair in the last trainer_rates, per dataset
ROUNDS: dict = {}  # every round's value of the last trainer_rates, per name


def paired_ratio(numerator: str, denominator: str) -> float:
    """Median over rounds of numerator / denominator measured in the same round."""
    return float(np.median(np.array(ROUNDS[numerator]) / np.array(ROUNDS[denominator])))


def trainer_rate(dataset, size: int, batch: int, precision: str, jit: bool, steps: int) -> float:
    return trainer_rates({"only": dataset}, size, batch, precision, jit, steps)["only"]


def keras_fit_runner(
    size: int, batch: int, precision: str, steps: int, steps_per_execution: int = 1
):
    """Plain Keras model.fit on in-memory numpy arrays (what users would write): returns a
    function that runs one more epoch of ``steps`` steps and gives its pairs/s. The model is
    built, compiled and traced here (one warm-up epoch), so each call times training only."""
    keras.mixed_precision.set_global_policy(precision)
    model = model_lib.create_dual_input_network((size, size), 3, 0.0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    keras.mixed_precision.set_global_policy("float32")
    x1, x2, y = in_memory_arrays(size, batch * steps)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    def epoch() -> float:
        model.fit(
            [x1, x2],
            y.astype("float32"),
            batch_size=batch,
            epochs=1,
            verbose=0,
            callbacks=[Timer()],
            shuffle=False,
        )
        return batch * steps / times[-1]

    epoch()  # tracing
    return epoch


def pipeline_rate(dataset, batch: int, batches: int, warmup: int = 5) -> float:
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def forward_flops_per_pair(size: int) -> int:
    """Multiply-adds x2 of one pair's forward pass, counted from the layers' shapes."""
    model = model_lib.create_dual_input_network((size, size), 3, 0.0)
    tower = model.get_layer("inception_tower")
    flops = 0
    for layer in tower.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            _, h, w, c = layer.output.shape
            flops += 2 * h * w * c * k[0] * k[1] * k[2]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * int(np.prod(layer.kernel.shape))
    flops *= 2  # two towers
    for name in ("D3", "output"):
        flops += 2 * int(np.prod(model.get_layer(name).kernel.shape))
    return flops


def train_flops_per_pair(size: int) -> int:
    """Training ~ 3x forward (forward, gradient w.r.t. activations, w.r.t. weights)."""
    return 3 * forward_flops_per_pair(size)


def matmul_peak(dtype=tf.float32, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a large square matmul on this machine, measured now."""
    a = tf.random.normal([n, n], dtype=tf.float32)
    a = tf.cast(a, dtype)
    mm = tf.function(lambda x: tf.matmul(x, x))
    mm(a).numpy()
    start = time.perf_counter()
    for _ in range(reps):
        r = mm(a)
    r.numpy()
    return 2 * n**3 * reps / (time.perf_counter() - start)


# A trainer progress line as the CLI prints it: "HH:MM:SS.fff step N/M ...".
STEP_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) step (\d+)/\d+ ")


def steady_rate(stderr: str, batch: int, first: int, last: int) -> float:
    """Pairs/s of a trainer CLI run between its progress lines of steps ``first`` and
    ``last`` (start-up, tracing and the end excluded)."""
    stamps = {}
    for line in stderr.splitlines():
        m = STEP_LINE.match(line)
        if m:
            stamps[int(m.group(2))] = datetime.datetime.strptime(m.group(1), "%H:%M:%S.%f")
    return (last - first) * batch / (stamps[last] - stamps[first]).total_seconds()


def median(values):
    """The median of a list of figures (the mean of the middle two for an even count)."""
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}")
