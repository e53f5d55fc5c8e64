"""Run directories, sweeps and locks take URLs (gs://...) through one path type; the code paths a
remote store takes (metrics rewritten rather than appended, locks without an atomic create) run
here on a local directory and give the same run."""

import json

import pytest

from helpers import small_config
from normjax.paths import as_path
from normjax.training import lock as lock_lib
from normjax.training import rundir as rundir_lib
from normjax.training.lock import RunLock
from normjax.training.loop import train
from normjax.training.rundir import RunDir


def test_url_workdirs_are_not_rewritten():
    run = RunDir("gs://bucket/sweeps/lr/run-1")
    assert str(run.path) == "gs://bucket/sweeps/lr/run-1"
    assert str(run.summary_path) == "gs://bucket/sweeps/lr/run-1/summary.json"
    assert str(run.checkpoints) == "gs://bucket/sweeps/lr/run-1/checkpoints"
    assert str(RunLock("gs://bucket/sweeps/lr/run-1").path) == "gs://bucket/sweeps/lr/run-1/lock"
    assert str(as_path("gs://bucket/sweeps/lr") / "pretrain" / "base-1") == "gs://bucket/sweeps/lr/pretrain/base-1"
    assert str(RunDir("runs/x").path) == str(as_path("runs/x")) and as_path("runs/x").is_absolute()


def test_remote_code_paths_give_the_same_run(tmp_path, monkeypatch):
    cfg = small_config(train={"steps": 24}, checkpoint={"every": 8})
    local = train(cfg, tmp_path / "local", progress=False)
    monkeypatch.setattr(rundir_lib, "is_remote", lambda p: True)
    monkeypatch.setattr(lock_lib, "is_remote", lambda p: True)
    remote = train(cfg, tmp_path / "remote", progress=False)
    assert remote["status"] == local["status"] == "done"
    assert remote["test_accuracy"] == local["test_accuracy"]

    def rows(d):
        return [
            {k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]

    assert len(rows(tmp_path / "remote")) == len(rows(tmp_path / "local")) > 3
    assert rows(tmp_path / "remote") == rows(tmp_path / "local")
    assert not (tmp_path / "remote" / "lock").exists()
    lock = RunLock(tmp_path / "remote")
    assert lock.acquire() and lock.live() and not RunLock(tmp_path / "remote").acquire()
    lock.release()
    assert not lock.live()


@pytest.mark.parametrize("url", ["ftp://host/run", "file://x"])
def test_unknown_url_schemes_are_one_line_errors(url):
    from normjax.errors import UserError

    with pytest.raises(UserError):
        RunDir(url)
