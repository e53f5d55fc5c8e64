"""PyTorch reference networks and train steps for the benchmarks.

The architectures here are the yardstick normjax is timed against, so they follow the papers
literally rather than any library's variant:

- `CifarResNet`: CIFAR ResNet v1 (He et al. 2016, section 4.2), depth 6n+2, with 1x1-conv
  projection shortcuts where the shape changes ("option B"). ResNet-20 has 272,474 parameters.
- `BnReluMlp`: flatten -> `depth` x (Linear without bias -> BatchNorm1d -> ReLU) -> Linear.

`CifarResNet(activation="prelu")` puts a channel-wise `nn.PReLU` (slopes initialised to 0, i.e.
ReLU at init) in place of every ReLU, and `make_train_step(prelu_l1=...)` adds the proximal L1
step on those slopes toward 1 (the APL study's sparsity prior, `normjax.transforms.prelu`); both
default to the plain ReLU network and SGD step.

Run `python -m benchmarks.torch_ref` to print the parameter counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# channels_last was faster than contiguous NCHW for the ResNet train step on CPU (measured:
# benchmarks/RESULTS.md, "Numbers moved out of the code"). oneDNN's CPU convolutions prefer
# NHWC, so NCHW pays layout reorders around each conv.
RESNET_CHANNELS_LAST = True

RESNET20_PARAMS = 272_474


def _activation(name: str, channels: int, prelu_init: float) -> nn.Module:
    """`nn.ReLU()`, or a channel-wise `nn.PReLU` with slopes starting at `prelu_init`."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(num_parameters=channels, init=prelu_init)
    raise ValueError(f"activation must be relu or prelu, got {name!r}")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (or channel-wise PReLU for both)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activation: str = "relu", prelu_init: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            # Option B: a learned projection only where the shape changes.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()
        # ReLU stays the functional F.relu (no modules), so the ReLU network is unchanged.
        self.act1: nn.Module | None = None
        self.act2: nn.Module | None = None
        if activation != "relu":
            self.act1 = _activation(activation, out_ch, prelu_init)
            self.act2 = _activation(activation, out_ch, prelu_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act1 is None or self.act2 is None:
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet v1 of depth 6n+2 (16/32/64 channels, global average pool, linear head).

    `activation="prelu"`: a channel-wise PReLU (slopes start at `prelu_init`) wherever v1 has a
    ReLU (stem and both per block), 16*(1 + 2n) + 32*2n + 64*2n slopes in all.
    """

    def __init__(
        self, depth: int = 20, num_classes: int = 10, activation: str = "relu", prelu_init: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), _activation(activation, 16, prelu_init)
        )
        blocks: list[nn.Module] = []
        in_ch = 16
        for stage, out_ch in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, activation, prelu_init))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


class BnReluMlp(nn.Module):
    """`depth` hidden layers of Linear(no bias)-BatchNorm1d-ReLU, then a linear classifier."""

    def __init__(self, depth: int = 20, width: int = 1024, in_features: int = 3072, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = in_features
        for _ in range(depth):
            # The bias would be cancelled by BatchNorm's mean subtraction.
            layers += [nn.Linear(fan_in, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(fan_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(torch.flatten(x, 1)))


def param_count(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def set_threads() -> int:
    """Use every core for intra-op parallelism; returns the thread count."""
    n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def pick_device(requested: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' fails loudly when there is none."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
    return torch.device(requested)


def make_train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    use_compile: bool,
    channels_last: bool = False,
    prelu_l1: float | None = None,
    prelu_tolerance: float = 0.01,
) -> Callable[[], None]:
    """Return a closure running one SGD train step on (x, y) and blocking until it is done.

    The model and batch must already be on the target device. With `use_compile` the model is
    wrapped in `torch.compile` (forward plus its AOT-autograd backward), compiled lazily on the
    first call. The optimizer step stays eager, as in the usual `torch.compile(model)` recipe:
    compiling it too cost a recompile once the momentum buffers appeared (its cost:
    benchmarks/RESULTS.md, "Numbers moved out of the code"), for an update that is a few foreach
    kernels and a small part of the step.

    With `prelu_l1` (a number; None = plain SGD) the step is the APL study's `sgd_prelu_l1`: no
    weight decay on the `nn.PReLU` slopes, and after the optimizer step the proximal step of
    `lr * prelu_l1 * |a - 1|` on each slope (d = a - 1, d = sign(d) max(|d| - lr prelu_l1, 0));
    a slope ending within `prelu_tolerance` of 1 is set to exactly 1 and stays frozen there.
    """
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    lr = 0.1
    slopes: list[torch.Tensor] = []
    if prelu_l1 is None:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    else:
        slopes = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
        if not slopes:
            raise ValueError("prelu_l1 needs a model with nn.PReLU layers")
        ids = {id(p) for p in slopes}
        rest = [p for p in model.parameters() if id(p) not in ids]
        opt = torch.optim.SGD(
            [{"params": rest}, {"params": slopes, "weight_decay": 0.0}], lr=lr, momentum=0.9, weight_decay=5e-4
        )
    frozen = [torch.zeros_like(a, dtype=torch.bool) for a in slopes]
    threshold = lr * (prelu_l1 or 0.0)

    @torch.no_grad()
    def prox() -> None:
        for a, f in zip(slopes, frozen, strict=True):
            d = a - 1.0
            d = torch.sign(d) * torch.clamp(d.abs() - threshold, min=0.0)
            f |= d.abs() < prelu_tolerance
            a.copy_(torch.where(f, torch.ones_like(d), d + 1.0))

    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if use_compile:
        forward = torch.compile(model)
    on_cuda = x.device.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        if slopes:
            prox()
        # CUDA kernels are asynchronous; CPU ops have already finished when they return.
        if on_cuda:
            torch.cuda.synchronize(x.device)

    return step


def main() -> None:
    resnet = CifarResNet(20)
    n = param_count(resnet)
    print(f"ResNet-20 (option B shortcuts): {n:,} parameters ({n / 1e6:.3f}M)")
    if n != RESNET20_PARAMS:
        raise SystemExit(f"expected {RESNET20_PARAMS:,} parameters")
    print(f"BN-ReLU MLP depth 20 width 1024: {param_count(BnReluMlp(20, 1024)):,} parameters")


if __name__ == "__main__":
    main()
