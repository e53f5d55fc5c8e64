"""Streamed data through `normjax train`: both input paths learn the same real data, a streamed
run resumed from a checkpoint ends bitwise where the uninterrupted run ends, and bad pipeline
settings are one line."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("grain")
pytest.importorskip("tensorflow_datasets")

from normjax.config import load_config  # noqa: E402
from normjax.data import load_dataset  # noqa: E402
from normjax.errors import UserError  # noqa: E402
from normjax.training.checkpoint import Checkpointer  # noqa: E402
from normjax.training.inputs import input_for  # noqa: E402
from normjax.training.loop import program_for, read_run, restore_state, train  # noqa: E402
from tfds_fake import prepare_digits  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    prepare_digits(root)
    return root


def _cfg(data_dir, *overrides):
    sets = [
        "data.name=nj_digits",
        f"data.data_dir={data_dir}",
        "data.workers=0",
        "data.eval_crop=1.0",
        "data.crop_scale_min=1.0",
        "log.metrics=[]",
        *overrides,
    ]
    return load_config("experiments/mlp_digits.py", overrides=sets)


def test_any_tfds_dataset_loads_exactly_in_memory(data_dir):
    ds, ref = load_dataset("nj_digits", data_dir=str(data_dir)), load_dataset("digits")
    for a, b in [
        (ds.train_images, ref.train_images),
        (ds.train_labels, ref.train_labels),
        (ds.test_images, ref.test_images),
        (ds.test_labels, ref.test_labels),
    ]:
        np.testing.assert_array_equal(a, b)
    assert (ds.mean, ds.std, ds.num_classes) == (ref.mean, ref.std, ref.num_classes)
    assert not input_for(_cfg(data_dir)).streaming  # auto: it fits in memory
    assert input_for(_cfg(data_dir, "data.memory_limit_mb=0")).streaming  # auto: it does not


def test_both_input_paths_learn_real_data(data_dir, tmp_path):
    """The same digits, held on device or streamed (PNG decode on the host, no augmentation):
    both learn; they draw different batches (docs: normjax.training.inputs)."""
    out = {}
    for pipeline in ("memory", "stream"):
        cfg = _cfg(data_dir, f"data.pipeline={pipeline}")
        out[pipeline] = train(cfg, tmp_path / pipeline, progress=False)
        assert out[pipeline]["status"] == "done"
    assert out["memory"]["test_accuracy"] >= 0.9 and out["stream"]["test_accuracy"] >= 0.9, out
    first = [json.loads((tmp_path / p / "metrics.jsonl").read_text().splitlines()[0]) for p in ("memory", "stream")]
    assert first[0]["step"] == first[1]["step"] == 0 and first[0]["loss"] != first[1]["loss"]  # other batches
    # The streamed final evaluation reads the same test records: evaluating the memory run's
    # parameters through the streamed eval path gives the memory path's numbers.
    _, inp, program, _, items = read_run(tmp_path / "memory")
    stream_inp = input_for(_cfg(data_dir, "data.pipeline=stream"))
    streamed = stream_inp.eval_sets(program, _cfg(data_dir))["test"](items)
    memory = inp.eval_sets(program, _cfg(data_dir))["test"](items)
    assert streamed["accuracy"] == pytest.approx(memory["accuracy"], abs=1e-7)  # the same count of 360
    np.testing.assert_allclose(streamed["loss"], memory["loss"], rtol=1e-6)


def test_streamed_run_resumed_from_a_checkpoint_ends_where_the_uninterrupted_one_ends(data_dir, tmp_path):
    # 14 steps in chunks of 4 cut at every 6: 4, 2, 4, 2, 2 (padded chunks); augmentation on.
    cfg = _cfg(
        data_dir,
        "data.pipeline=stream",
        "data.crop_scale_min=0.3",
        "data.flip=true",
        "train.steps=14",
        "train.steps_per_dispatch=4",
        "checkpoint.every=6",
        "checkpoint.keep=5",
        "log.dense_steps=100",
    )
    ref = train(cfg, tmp_path / "ref", progress=False)
    assert ref["status"] == "done"
    ckpt = Checkpointer(tmp_path / "ref" / "checkpoints", read_only=True)
    assert ckpt.steps() == [6, 12, 14]
    # A copy of the run as it was at step 6: resumes there, with the pipeline state saved then.
    shutil.copytree(tmp_path / "ref", tmp_path / "resumed")
    for step in (12, 14):
        shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(step))
    (tmp_path / "resumed" / "summary.json").unlink()
    program = program_for(cfg, input_for(cfg))
    state, _, data = restore_state(Checkpointer(tmp_path / "resumed" / "checkpoints"), program)
    assert int(state.step) == 6 and json.loads(bytes(data).rstrip(b"\0"))["next_step"] == 6
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert resumed["status"] == "done" and "already" not in resumed
    a = jax.device_get(restore_state(Checkpointer(tmp_path / "ref" / "checkpoints"), program)[0])
    b = jax.device_get(restore_state(Checkpointer(tmp_path / "resumed" / "checkpoints"), program)[0])
    assert int(a.step) == int(b.step) == 14
    jax.tree.map(np.testing.assert_array_equal, a, b)
    rows = [
        [
            {k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in ("ref", "resumed")
    ]
    assert len(rows[0]) == 14 and rows[0] == rows[1]
    assert (ref["test_accuracy"], ref["train_loss"]) == (resumed["test_accuracy"], resumed["train_loss"])


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["data.name=digits", "data.pipeline=stream"], ["'digits' is built in", "data.pipeline=memory"]),
        (["data.pipeline=memory", "data.input_size=16"], ["data.input_size=16", "8x8", "data.pipeline=stream"]),
        (["data.name=nj_no_such_dataset"], ["'nj_no_such_dataset' is unknown"]),
        (["data.pipeline=fast"], ["data.pipeline='fast' is unknown", "auto, memory, stream"]),
        (["data.pipeline=stream", "data.crop_padding=4"], ["data.crop_padding=4", "random-resized"]),
        (["data.eval_crop=1.5"], ["data.eval_crop=1.5", "(0, 1]"]),
    ],
)
def test_bad_pipeline_settings_are_one_line(data_dir, tmp_path, overrides, needles):
    with pytest.raises(UserError) as exc:
        cfg = _cfg(data_dir, *overrides)
        train(cfg, tmp_path / "run", progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert not (tmp_path / "run").exists()


def test_a_sweep_of_streamed_runs_trains_them_one_at_a_time_and_eval_reads_them(data_dir, tmp_path, capsys):
    """Streamed runs differ only in traced values yet train alone (each reads its own batches);
    each equals the same run trained by `train`; `normjax eval` reads a streamed run back."""
    from normjax.sweep.runner import run_sweep
    from normjax.training.loop import evaluate_run

    spec = tmp_path / "sweep_stream.py"
    sweep = {
        "base": str(Path("experiments/mlp_digits.py").resolve()),
        "grid": {"train.seed": [0, 1]},
        "set": {
            "data.name": "nj_digits",
            "data.data_dir": str(data_dir),
            "data.pipeline": "stream",
            "data.workers": 0,
            "log.metrics": [],
            "train.steps": 8,
            "train.steps_per_dispatch": 4,
        },
    }
    spec.write_text(f"def get_sweep(size):\n    return {sweep!r}\n")
    summaries = run_sweep(spec, workdir=tmp_path / "sweep", progress=False)
    assert len(summaries) == 2 and all(s["status"] == "done" for s in summaries.values())
    err = capsys.readouterr().err
    assert err.count("[group of 1,") == 2 and "[group of 2" not in err, err
    for name, summary in summaries.items():
        cfg = json.loads((tmp_path / "sweep" / name / "config.json").read_text())
        alone = train(cfg, tmp_path / f"alone-{name}", progress=False)
        assert (alone["test_accuracy"], alone["train_loss"]) == (summary["test_accuracy"], summary["train_loss"])
        again = evaluate_run(tmp_path / "sweep" / name)
        assert again["step"] == 8 and again["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-7)
