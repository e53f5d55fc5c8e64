"""End-to-end behaviour of the loop on the embedded digits data (seconds each on 2 cores)."""

import json
import os
import shutil
import signal
import threading

import jax
import numpy as np
import optax
import pytest

from helpers import assert_bitwise, small_config
from normjax.cli import main
from normjax.errors import Interrupted
from normjax.models import per_layer
from normjax.training.checkpoint import Checkpointer
from normjax.training.inputs import input_for
from normjax.training.loop import program_for, restore_state, state_items, train, warm_start
from normjax.training.rundir import RunDir


def _rows(workdir):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in RunDir(workdir).read_metrics()]


def _final_params(workdir, cfg):
    program = program_for(cfg, input_for(cfg))
    state, *_ = restore_state(Checkpointer(workdir / "checkpoints"), program)
    return jax.device_get(state.params)


def test_mlp_learns_digits(tmp_path):
    cfg = small_config(train={"steps": 122})
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "done"
    assert summary["test_accuracy"] >= 0.90, summary
    rows = _rows(tmp_path / "run")
    # The cadence: every step of the first 10, then every 5th, and always the last one.
    assert [r["step"] for r in rows] == list(range(10)) + list(range(14, 122, 5)) + [121]
    assert rows[-1]["loss"] < rows[0]["loss"] / 4
    assert len(rows[0]["w_norm"]) == 4  # 3 hidden layers + classifier, in depth order
    layers = json.loads((tmp_path / "run" / "layers.json").read_text())
    assert [l["name"] for l in layers] == ["fc0", "fc1", "fc2", "head"]
    for f in ("config.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / "run" / f).exists()


def test_norm_growth_identity_for_plain_sgd(tmp_path):
    """docs/science.md#norm-growth: without momentum or weight decay,
    ||w_{t+1}||² = ||w_t||² + η²||g_t||² exactly."""
    lr = 0.5
    cfg = small_config(
        model={"bn_eps": 1e-10},
        optim={"lr": lr, "momentum": 0.0, "weight_decay": 0.0},
        train={"steps": 12},
        log={"dense_steps": 12},
    )
    train(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    w = np.array([r["w_norm"] for r in rows])[:, :-1]  # scale-invariant layers (all but the classifier)
    g = np.array([r["g_norm"] for r in rows])[:, :-1]
    np.testing.assert_allclose(w[1:] ** 2, w[:-1] ** 2 + lr**2 * g[:-1] ** 2, rtol=2e-5)
    assert np.all(w[-1] > w[0])  # and the norms really grew


def test_logging_cadence(tmp_path):
    cfg = small_config(train={"steps": 40}, log={"dense_steps": 10, "every": 5})
    train(cfg, tmp_path / "run")
    assert [r["step"] for r in _rows(tmp_path / "run")] == list(range(10)) + [14, 19, 24, 29, 34, 39]


def test_sweep_values_compile_nothing_new(tmp_path):
    """LR, momentum, weight decay and seed are traced: a second run with new values compiles nothing."""
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
    )
    train(small_config(train={"steps": 16}), tmp_path / "a")
    before = len(compiles)
    assert before > 0
    s = train(
        small_config(optim={"lr": 0.03, "momentum": 0.5, "weight_decay": 1e-3}, train={"steps": 16, "seed": 7}),
        tmp_path / "b",
    )
    assert s["status"] == "done"
    assert len(compiles) == before, compiles[before:]
    assert _rows(tmp_path / "a")[0]["lr"] != _rows(tmp_path / "b")[0]["lr"]


def _checkpoint_steps(run) -> dict[int, int]:
    """{checkpoint name: the step its state holds}."""
    cfg = json.loads((run / "config.json").read_text())
    meta = state_items(program_for(cfg, input_for(cfg)).abstract_state(), 0.0)["meta"]
    meta["elapsed"] = jax.ShapeDtypeStruct((), np.float64)
    ckpt = Checkpointer(run / "checkpoints", read_only=True)
    return {s: int(ckpt.restore({"meta": meta}, step=s)[1]["meta"]["step"]) for s in ckpt.steps()}


def test_divergence_stops_cleanly(tmp_path, capsys):
    cfg = small_config(optim={"lr": 1e3, "momentum": 0.9}, train={"steps": 64}, checkpoint={"every": 2})
    summary = train(cfg, tmp_path / "run")
    at = summary["step"]
    assert summary["status"] == "diverged" and 2 < at < 64  # a few good steps first, so checkpoints exist
    assert summary["reason"] in (f"non-finite loss at step {at}", f"non-finite gradient norm at step {at}")
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    steps = [r["step"] for r in _rows(tmp_path / "run")]
    assert steps == list(range(at))  # every applied step once (dense logging), none after the divergence
    saved = _checkpoint_steps(tmp_path / "run")
    assert saved and all(name == held <= at for name, held in saved.items())  # no frozen state saved
    assert summary["message"].endswith(f"checkpoint of step {max(saved)} kept")
    with pytest.raises(SystemExit) as e:  # the CLI says so in one line and exits non-zero
        main(
            [
                "train",
                "experiments/mlp_digits.py",
                "--workdir",
                str(tmp_path / "cli"),
                "--set",
                "optim.lr=1e30",
                "--set",
                "optim.momentum=0.0",
            ]
        )
    assert e.value.code == 3
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("diverged:") and captured.out == ""  # readable: the record is the run's summary.json
    with pytest.raises(SystemExit) as e:  # --json: a script gets the record on stdout all the same
        main(
            ["train", "experiments/mlp_digits.py", "--workdir", str(tmp_path / "cli-json"), "--json"]
            + ["--set", "optim.lr=1e30", "--set", "optim.momentum=0.0"]
        )
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert e.value.code == 3 and record["status"] == "diverged" and captured.err.strip().startswith("diverged:")
    stored = json.loads((tmp_path / "cli-json" / "summary.json").read_text())
    assert record.keys() == stored.keys() and (record["step"], record["reason"]) == (stored["step"], stored["reason"])


def test_an_infinite_gradient_with_a_finite_loss_diverges_on_host_and_device_alike(tmp_path):
    """One rule: the device freezes on a non-finite loss or gradient norm, and the records say so."""
    cfg = small_config(train={"steps": 16}, checkpoint={"every": 8})
    program = program_for(cfg, input_for(cfg))
    state = program.init_state(cfg)
    params = jax.tree.map(np.array, jax.device_get(state.params))
    params["hidden"]["rest"]["bn"]["scale"][1] *= 1e30  # logits ~1e30: finite loss, gradient norm overflows
    with Checkpointer(tmp_path / "src" / "checkpoints") as ckpt:
        ckpt.save(0, {"params": params, "batch_stats": jax.device_get(state.batch_stats)})
    summary = train(
        small_config(train={"steps": 16, "init_from": str(tmp_path / "src")}, checkpoint={"every": 8}), tmp_path / "run"
    )
    assert summary["status"] == "diverged" and summary["step"] == 0
    assert summary["reason"] == "non-finite gradient norm at step 0"
    assert summary["message"].endswith("no checkpoint was written")
    assert _rows(tmp_path / "run") == []
    assert _checkpoint_steps(tmp_path / "run") == {}


def test_resume_after_corrupt_checkpoint_matches_uninterrupted(tmp_path):
    cfg = small_config(train={"steps": 40}, checkpoint={"every": 16})
    train(cfg, tmp_path / "ref")
    shutil.copytree(tmp_path / "ref", tmp_path / "run")
    run = tmp_path / "run"
    (run / "summary.json").unlink()
    ckpts = Checkpointer(run / "checkpoints").steps()
    assert ckpts == [16, 32, 40]
    for f in (run / "checkpoints" / "40").rglob("*"):  # corrupt the newest checkpoint
        if f.is_file():
            f.write_bytes(b"garbage")
    summary = train(cfg, run)
    assert summary["status"] == "done"
    assert _rows(run) == _rows(tmp_path / "ref")
    a, b = _final_params(run, cfg), _final_params(tmp_path / "ref", cfg)
    assert_bitwise(a, b, "final parameters")  # bitwise by construction: the same program, resumed


def test_warm_start_takes_params_with_a_new_optimizer(tmp_path):
    """Params and BN statistics from the source's last checkpoint; the optimizer state, step and
    key fresh from the new config."""
    cfg_a = small_config(train={"steps": 24})
    train(cfg_a, tmp_path / "a")
    src, *_ = restore_state(Checkpointer(tmp_path / "a" / "checkpoints"), program_for(cfg_a, input_for(cfg_a)))
    assert int(src.step) == 24
    cfg_b = small_config(optim={"lr": 0.01, "momentum": 0.0}, train={"steps": 8, "init_from": str(tmp_path / "a")})
    program = program_for(cfg_b, input_for(cfg_b))
    fresh = program.init_state(cfg_b)
    warm = warm_start(program.init_state(cfg_b), program, cfg_b["train"]["init_from"])  # as train() does
    # Bitwise by construction: copied arrays.
    assert_bitwise((warm.params, warm.batch_stats), (src.params, src.batch_stats), "warm-started")
    jax.tree.map(
        np.testing.assert_array_equal,
        (warm.opt_state, warm.step, warm.key, warm.diverged),
        (fresh.opt_state, fresh.step, fresh.key, fresh.diverged),
    )
    # b's hyper-parameters, and no trace of the source's (nonzero) momentum buffer
    get = optax.tree_utils.tree_get
    assert (float(get(warm.opt_state, "lr")), float(get(warm.opt_state, "momentum"))) == (float(np.float32(0.01)), 0.0)
    assert not any(np.any(x) for x in jax.tree.leaves(get(warm.opt_state, "trace")))
    assert any(np.any(x) for x in jax.tree.leaves(get(src.opt_state, "trace")))
    # End to end: b's first logged step measures the source's layers (measured 8.3e-8 apart: the
    # norms summed in another order).
    train(cfg_b, tmp_path / "b")
    first = _rows(tmp_path / "b")[0]
    assert first["step"] == 0
    np.testing.assert_allclose(first["w_norm"], np.sqrt(per_layer(src.params, program.layers)), rtol=2e-7, atol=0)


def test_bfloat16_run(tmp_path):
    s = train(small_config(train={"steps": 16, "dtype": "bfloat16"}), tmp_path / "run")
    assert s["status"] == "done" and np.isfinite(s["test_loss"])


@pytest.mark.parametrize(
    "args,words",
    [
        (["--set", "model.depth=21", "--set", "model.name=resnet"], ["model.depth=21", "6n+2"]),
        (["--set", "data.name=imagenet"], ["data", "imagenet"]),
        (["--set", "data.name=cifar10", "--set", "data.data_dir=EMPTY"], ["cifar10", "prepare"]),
        (["--set", 'log.metrics=["nope"]'], ["nope", "layer_norms"]),
        (["--set", "optim.name=adamw"], ["optim.name", "sgd"]),
        (["--set", "train.batch_size=5000"], ["batch_size=5000"]),
        (["--workdir", "/proc/forbidden"], ["/proc/forbidden", "writable"]),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, words):
    args = [a.replace("EMPTY", str(tmp_path / "empty")) for a in args]
    workdir = tmp_path / "run"
    argv = (
        ["train", "experiments/mlp_digits.py"] + (["--workdir", str(workdir)] if "--workdir" not in args else []) + args
    )
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(w in err for w in words), err
    assert not workdir.exists()


def test_eval_command_reproduces_the_summary(tmp_path, capsys):
    summary = train(small_config(train={"steps": 16}), tmp_path / "run")
    capsys.readouterr()
    main_ok = None
    try:
        main(["eval", str(tmp_path / "run")])
    except SystemExit as e:
        main_ok = e.code
    assert main_ok == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 16
    assert out["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path / "nothing")])
    assert e.value.code == 2


@pytest.mark.parametrize("chunk", [1, 7, 22, 50])
def test_data_order_is_each_epochs_permutation_whatever_the_chunking(chunk):
    """Batches come from the permutation of (seed, epoch) alone: the orders drawn once per chunk
    cover every epoch the chunk reaches, from any starting offset within an epoch."""
    cfg = small_config(train={"steps_per_dispatch": chunk})
    program = program_for(cfg, input_for(cfg))
    spe, b, n = program.steps_per_epoch, program.batch_size, 1437
    assert spe == 22
    base = jax.random.fold_in(jax.random.key(np.uint32(cfg["train"]["seed"])), 1)
    for start in (0, 5, 21, 44):
        state = program.init_state(cfg).replace(step=jax.numpy.int32(start))
        perms, first = program.epoch_orders(state, n)
        for t in range(start, start + chunk):
            want = jax.random.permutation(jax.random.fold_in(base, t // spe), n)[(t % spe) * b : (t % spe + 1) * b]
            assert 0 <= t // spe - int(first) < perms.shape[0]
            np.testing.assert_array_equal(perms[t // spe - int(first)][(t % spe) * b : (t % spe + 1) * b], want)


# ---- optimizers built from normjax.transforms, end to end -------------------------------------
@pytest.mark.parametrize(
    "optim, model, logged",
    [
        ({"name": "sgd_uniform_elr", "lr": 0.05}, {}, {"lr", "elr_target"}),
        (
            {
                "name": "sgd_uniform_elr",
                "lr": 0.3,
                "elr_reference": "geometric_mean",
                "elr_position": "before_momentum",
            },
            {},
            {"lr", "elr_target"},
        ),
        ({"name": "sgd_critical_warmup", "lr": 0.1}, {}, {"lr", "critical_lr"}),
        ({"name": "sgd_prelu_l1", "lr": 0.1, "prelu_l1": 0.5}, {"activation": "prelu"}, {"lr", "prelu_frozen"}),
    ],
)
def test_transform_optimizers_learn_and_log(tmp_path, optim, model, logged):
    cfg = small_config(optim=optim, model=model, train={"steps": 80})
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "done"
    assert summary["test_accuracy"] >= 0.85, summary
    rows = _rows(tmp_path / "run")
    assert logged <= set(rows[0]), rows[0].keys()
    if "elr_target" in logged and optim.get("elr_reference", "lr") == "lr":
        assert all(r["elr_target"] == r["lr"] for r in rows)  # the LR is the common ELR


def test_critical_lr_warmup_caps_the_lr_and_ends_by_itself(tmp_path):
    """A deep plain BN MLP: η_t = min(target, η_crit) every step; η_crit starts below the target
    (the warm-up acts) and rises past it (the warm-up ends with no length given)."""
    target = 1.0
    cfg = small_config(
        model={"depth": 40, "width": 32},
        optim={"name": "sgd_critical_warmup", "lr": target},
        train={"steps": 40},
        log={"dense_steps": 40},
    )
    train(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert len(rows) == 40
    lr, crit = np.array([r["lr"] for r in rows]), np.array([float(r["critical_lr"]) for r in rows])
    np.testing.assert_array_equal(lr, np.minimum(np.float32(target), crit.astype(np.float32)))
    assert np.all(lr <= crit)
    assert lr[0] < target / 2  # warming up
    assert np.all(lr[-10:] == target)  # done, by itself


def test_prelu_prior_makes_units_exactly_linear_and_compiles_once(tmp_path):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
    )
    frozen, slopes = {}, {}
    for lam in (0.0, 3.0):
        cfg = small_config(
            model={"activation": "prelu"},
            train={"steps": 40},
            optim={"name": "sgd_prelu_l1", "prelu_l1": lam, "weight_decay": 5e-4},
        )
        n_before = len(compiles)
        train(cfg, tmp_path / f"l{lam}")
        if lam > 0:
            assert len(compiles) == n_before, compiles[n_before:]  # λ is traced
        frozen[lam] = [r["prelu_frozen"] for r in _rows(tmp_path / f"l{lam}")]
        params = _final_params(tmp_path / f"l{lam}", cfg)
        slopes[lam] = np.concatenate(
            [np.ravel(x) for p, x in jax.tree_util.tree_leaves_with_path(params) if "slope" in jax.tree_util.keystr(p)]
        )
    assert slopes[3.0].size == 3 * 64
    assert max(frozen[0.0]) == 0
    assert frozen[3.0] == sorted(frozen[3.0]) and frozen[3.0][-1] > 0  # frozen units stay frozen
    assert int(np.sum(slopes[3.0] == 1.0)) == frozen[3.0][-1]  # and sit exactly at 1


def test_an_interrupted_run_says_so_and_resumes_with_a_line(tmp_path, monkeypatch, capsys):
    import normjax.training.loop as loop

    drain, calls = loop._drain, []

    def interrupt_on_the_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return drain(*args)

    cfg = small_config(train={"steps": 40}, checkpoint={"every": 16})
    monkeypatch.setattr(loop, "_drain", interrupt_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    saved = Checkpointer(tmp_path / "run" / "checkpoints", read_only=True).steps()
    assert saved == [16] and summary["status"] == "interrupted" and summary["step"] == 16
    assert not (tmp_path / "run" / "lock").exists()  # released: a dead run is told from a live one
    monkeypatch.setattr(loop, "_drain", drain)
    capsys.readouterr()
    assert train(cfg, tmp_path / "run")["status"] == "done"
    assert f"resuming {str(tmp_path / 'run')!r} from step 16 of 40" in capsys.readouterr().err


def _signal_at_drain(monkeypatch, k):
    """SIGINT to this process from inside the loop's k-th metrics fetch, as Ctrl-C mid-run."""
    import normjax.training.loop as loop

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    drain, calls = loop._drain, []

    def drain_and_signal(*args):
        calls.append(1)
        if len(calls) == k:
            os.kill(os.getpid(), signal.SIGINT)
        return drain(*args)

    monkeypatch.setattr(loop, "_drain", drain_and_signal)
    return drain


def test_ctrl_c_saves_the_step_reached_and_the_run_resumes_bitwise(tmp_path, monkeypatch, capsys, sigint_default):
    """Issue 33: Ctrl-C before the first periodic checkpoint saved nothing ("resumes from step 0").
    Now the loop stops at the end of its chunk, saves that step, and the run resumes from it to the
    parameters and metric rows of an uninterrupted run, bit for bit."""
    cfg = small_config(train={"steps": 40}, checkpoint={"every": 1000})  # chunks of 8, no periodic save
    train(cfg, tmp_path / "ref")
    import normjax.training.loop as loop

    drain = _signal_at_drain(monkeypatch, 2)  # the second fetch: chunk 3 (steps 16-23) is in flight
    with pytest.raises(KeyboardInterrupt) as e:
        train(cfg, tmp_path / "run")
    assert Checkpointer(tmp_path / "run" / "checkpoints", read_only=True).steps() == [24]
    assert isinstance(e.value, Interrupted) and e.value.exit_code == 130
    assert str(e.value) == (
        f"SIGINT at step 24 of 40: saved in {tmp_path / 'run' / 'checkpoints'}; the same command resumes from step 24"
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == 24
    assert _rows(tmp_path / "run") == [r for r in _rows(tmp_path / "ref") if r["step"] < 24]  # all logged
    assert not (tmp_path / "run" / "lock").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back
    monkeypatch.setattr(loop, "_drain", drain)
    capsys.readouterr()
    assert train(cfg, tmp_path / "run")["status"] == "done"
    assert f"resuming {str(tmp_path / 'run')!r} from step 24 of 40" in capsys.readouterr().err
    assert _rows(tmp_path / "run") == _rows(tmp_path / "ref")
    assert_bitwise(_final_params(tmp_path / "run", cfg), _final_params(tmp_path / "ref", cfg), "final parameters")


def test_a_run_directory_keeps_its_config(tmp_path, capsys):
    """A finished run with the same config is "already done"; another config is refused, finished or not."""
    argv = ["train", "experiments/mlp_digits.py", "--workdir", str(tmp_path / "run"), "--set", "train.steps=8"]
    for _ in range(2):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.count("already done") == 1 and out.index("already done") > out.index("run directory")
    for extra in (["--set", "optim.lr=0.05"], ["--set", "train.steps=16"]):
        with pytest.raises(SystemExit) as e:
            main(argv + extra)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds a done run with another config" in err[0], err
    assert "optim.lr: 0.1 -> 0.05" in err[0] or "train.steps: 8 -> 16" in err[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "done"
