"""The progress lines' rate and ETA, on a fake clock: compilation is no step's time."""

import re
import types

from normjax.training import progress


def test_the_eta_leaves_out_compilation(monkeypatch, capsys):
    """A 30 s compilation, then chunks of 20 steps every 0.5 s: every line's ETA is the time the
    remaining steps take (issue 33: the first ETA was 156 s for a 48 s run)."""
    now = [0.0]
    clock = types.SimpleNamespace(time=lambda: now[0], monotonic=lambda: now[0])
    monkeypatch.setattr(progress, "time", clock)
    total, chunk, chunk_s, compile_s = 2000, 20, 0.5, 30.0
    bar = progress.Progress(total, initial=0, batch_size=64, enabled=False, every_s=10.0)
    now[0] += compile_s
    for _ in range(total // chunk):
        now[0] += chunk_s
        bar.update(chunk, loss=1.0, acc=0.5)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    etas = [(int(m[1]), int(m[2])) for m in (re.search(r"step (\d+)/\d+ .* ETA (\d+)s", l) for l in lines) if m]
    assert len(etas) >= 5, lines
    for step, eta in etas:
        left = (total - step) / chunk * chunk_s
        assert abs(eta - left) <= 1, (step, eta, left, lines)
    assert etas[-1] == (total, 0)
    imgs = {int(m[1]) for m in (re.search(r"(\d+) img/s", l) for l in lines) if m}
    assert imgs == {chunk / chunk_s * 64}, lines  # the images/s leave compilation out too
