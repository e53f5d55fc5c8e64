"""Progress: a tqdm bar on a terminal (step, loss, accuracy, images/s, ETA), plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Progress of one run; `enabled=None` shows a bar only when stderr is a terminal.

    The rate (images/s) and the ETA count from the first `update` on: the time before it is the
    training step's compilation and the first chunk, which would make the first ETA several times
    too long. The bar appears, and plain lines start, at that first update.

    Args:
      total: the run's last step.
      initial: the step it starts from (a resumed run's).
      batch_size: examples per step, over every vectorized run.
      enabled: a tqdm bar (True), plain lines every `every_s` (False), or a bar on a terminal (None).
      every_s: seconds between plain lines (the last step always gets one).

    Example:
      >>> bar = Progress(100, initial=0, batch_size=64, enabled=False)
      >>> bar.update(10, loss=2.3, acc=0.1)  # the baseline: compilation is no step's time
      >>> bar.close()
    """

    def __init__(
        self, total: int, *, initial: int, batch_size: int, enabled: bool | None = None, every_s: float = 10.0
    ):
        self.total, self.step, self.batch = total, initial, batch_size
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        self.t0: float | None = None  # the time of the first update, where the rate starts
        self.start_step, self.every_s = initial, every_s
        self.last = time.monotonic()

    def update(self, n: int, *, loss: float, acc: float) -> None:
        self.step += n
        now = time.monotonic()
        if self.t0 is None:  # compilation and the first chunk are behind us: the rate starts here
            self.t0, self.start_step, self.last = now, self.step, now
            if self.tty:
                from tqdm.auto import tqdm  # only for a terminal: GPU images without tqdm still run

                self.bar = tqdm(total=self.total, initial=self.step, unit="step", dynamic_ncols=True)
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}")
            elif self.step >= self.total:
                self._line(loss, acc, None)
            return
        rate = (self.step - self.start_step) / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", img_s=f"{rate * self.batch:.0f}")
        elif now - self.last >= self.every_s or self.step >= self.total:
            self.last = now
            self._line(loss, acc, rate)

    def _line(self, loss: float, acc: float, rate: float | None) -> None:
        speed = ""
        if rate is not None:
            speed = f" {rate * self.batch:.0f} img/s ETA {(self.total - self.step) / max(rate, 1e-9):.0f}s"
        print(f"step {self.step}/{self.total} loss {loss:.4f} acc {acc:.3f}{speed}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
