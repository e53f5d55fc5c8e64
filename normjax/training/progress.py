"""Progress: a tqdm bar on a terminal (step, loss, accuracy, images/s, ETA), plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Progress of one run; `enabled=None` shows a bar only when stderr is a terminal."""

    def __init__(
        self, total: int, *, initial: int, batch_size: int, enabled: bool | None = None, every_s: float = 10.0
    ):
        self.total, self.step, self.batch = total, initial, batch_size
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        if self.tty:
            from tqdm.auto import tqdm  # only for a terminal: GPU images without tqdm still run

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        else:
            self.bar = None
        self.t0 = self.last = time.time()
        self.start_step, self.every_s = initial, every_s

    def update(self, n: int, *, loss: float, acc: float) -> None:
        self.step += n
        now = time.time()
        rate = (self.step - self.start_step) / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", img_s=f"{rate * self.batch:.0f}")
        elif now - self.last >= self.every_s or self.step >= self.total:
            self.last = now
            eta = (self.total - self.step) / max(rate, 1e-9)
            print(
                f"step {self.step}/{self.total} loss {loss:.4f} acc {acc:.3f} "
                f"{rate * self.batch:.0f} img/s ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
