"""The command line: help on every argument, --version, the readable train summary (no training)."""

import argparse
import json

import pytest

import normjax
from normjax import cli


def test_every_argument_of_every_command_has_help():
    parsers = cli.parsers()
    assert len(parsers) == 1 + 7 + len(cli.STUDY_COMMANDS)
    missing = []
    for name, parser in parsers.items():
        actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert actions, name
        missing += [f"{name}: {a.option_strings or a.dest}" for a in actions if not (a.help or "").strip()]
        for a in actions:  # the subcommands' one-line descriptions
            if isinstance(a, argparse._SubParsersAction):
                missing += [f"{name}: {c.dest}" for c in a._choices_actions if not (c.help or "").strip()]
    assert missing == []


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"normjax {normjax.__version__}\n"


SUMMARY = {
    "status": "done",
    "step": 600,
    "total_steps": 600,
    "epochs": 12.0,
    "wall_time": 83.2274763584137,
    "train_loss": 0.031,
    "train_accuracy": 0.99,
    "test_loss": 0.1357,
    "test_accuracy": 0.9611,
    "elr_log_spread": float("nan"),
}


def test_format_summary(tmp_path):
    text = cli.format_summary(SUMMARY, tmp_path)
    assert text.splitlines() == [
        "done: test accuracy 96.11% (loss 0.1357), train accuracy 99.00% (loss 0.0310)",
        "600/600 steps (12 epochs) in 1 min 23 s",
        f"run directory: {tmp_path} (summary.json, metrics.jsonl, checkpoints/)",
    ]
    (tmp_path / "figures").mkdir()
    assert "figures" not in cli.format_summary(SUMMARY, tmp_path)  # an empty folder is no figure
    (tmp_path / "figures" / "elr_heatmap.png").write_bytes(b"")
    assert cli.format_summary(SUMMARY, tmp_path).splitlines()[-1] == f"figures: {tmp_path / 'figures'}"
    again = cli.format_summary(SUMMARY | {"already": True, "wall_time": "nan"}, tmp_path).splitlines()
    assert again[0].startswith(
        "already done (nothing trained; a new config needs a new --workdir): test accuracy 96.11%"
    )
    assert again[1] == "600/600 steps (12 epochs)"
    assert [cli.format_duration(s) for s in (8.26, 60.0, 3599.6, 7322.0)] == [
        "8.3 s",
        "1 min 0 s",
        "1 h 00 min",
        "2 h 02 min",
    ]


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_train_prints_a_readable_summary_or_json(tmp_path, monkeypatch, capsys, flag):
    import normjax.training.loop as loop

    monkeypatch.setattr(loop, "train", lambda cfg, workdir: dict(SUMMARY))
    workdir = tmp_path / "run"
    assert cli.run(["train", "experiments/mlp_digits.py", "--workdir", str(workdir), *flag]) == 0
    out = capsys.readouterr().out
    if flag:
        assert json.loads(out) == SUMMARY | {"elr_log_spread": "nan"}
    else:
        assert out == cli.format_summary(SUMMARY, workdir) + "\n" and "wall_time" not in out


@pytest.mark.parametrize(
    "sets,words",
    [
        (["train.epochs=1e9"], ["train.epochs", "1073741824"]),
        (["train.steps=99999999999"], ["train.steps=99999999999", "1073741824"]),
        (["optim.prelu_l1=0.1"], ["optim.prelu_l1=0.1", "'sgd'", "sgd_prelu_l1, sgd_prelu_target"]),
        (["optim.elr_reference=geometric_mean"], ["optim.elr_reference", "sgd_uniform_elr"]),
        (["optim.name=sgd_uniform_elr", "optim.prelu_gain=0.1"], ["optim.prelu_gain", "sgd_prelu_target"]),
        # NaN and infinity pass range checks by comparison; no key takes them
        (["optim.lr=NaN"], ["'optim.lr' got nan", "finite numbers"]),
        (["optim.lr=Infinity"], ["'optim.lr' got inf", "finite numbers"]),
        (["train.epochs=NaN"], ["'train.epochs' got nan", "finite numbers"]),
        (["optim.milestones=[0.5, NaN]"], ["'optim.milestones' got [0.5, nan]", "finite numbers"]),
        # a warm start that cannot be read: refused before the run directory is created
        (["train.init_from=/nonexistent/run"], ["train.init_from='/nonexistent/run'", "no checkpoint"]),
    ],
)
def test_a_run_nothing_can_train_as_asked_is_one_line_and_creates_nothing(tmp_path, capsys, sets, words):
    """A step count int32 cannot hold; an optim key the chosen optimizer does not read (the run
    would train without it, silently)."""
    args = ["train", "experiments/mlp_digits.py", "--workdir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        cli.main(args + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_keys_every_optimizer_reads_are_never_refused():
    from normjax.config import DEFAULTS, merge, validate

    for name in ("sgd", "sgd_uniform_elr", "sgd_critical_warmup"):  # the schedule's keys, the APL tolerance
        validate(
            merge(DEFAULTS, {"optim": {"name": name, "schedule": "step", "warmup_steps": 5, "prelu_tolerance": 0.05}})
        )


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`normjax fold RUN | head`: the reader goes away while normjax writes; no traceback, exit 0."""
    import subprocess
    import sys

    code = (
        "import normjax.cli as c\ndef run(argv):\n    raise BrokenPipeError(32, 'Broken pipe')\nc.run = run\nc.main([])"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_an_unknown_option_of_a_command_shows_that_commands_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "experiments/mlp_digits.py", "--lr", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: normjax train ") and "--set KEY=VALUE" in err
    assert err.strip().endswith("normjax train: error: unrecognized arguments: --lr 0.1")
