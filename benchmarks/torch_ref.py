"""PyTorch reference networks and train steps for the benchmarks.

The architectures here are the yardstick normjax is timed against, so they follow the papers
literally rather than any library's variant:

- `CifarResNet`: CIFAR ResNet v1 (He et al. 2016, section 4.2), depth 6n+2, with 1x1-conv
  projection shortcuts where the shape changes ("option B"). ResNet-20 has 272,474 parameters.
  `in_channels` and `width` (stage widths w, 2w, 4w) size it for other inputs; `dims=1` builds
  it from `nn.Conv1d` / `nn.BatchNorm1d` for 1-D signals `[B, C, L]` (e.g. MNIST-1D), the same
  blocks and strides along the signal.
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


def _conv_bn(dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    """The conv and BatchNorm classes for images (`dims=2`) or 1-D signals (`dims=1`)."""
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d
    raise ValueError(f"dims must be 1 or 2, got {dims}")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (or channel-wise PReLU for both).

    `dims=1`: the same block with kernel-3 `nn.Conv1d`s and `nn.BatchNorm1d`s on `[B, C, L]`.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        activation: str = "relu",
        prelu_init: float = 0.0,
        dims: int = 2,
    ) -> None:
        super().__init__()
        conv, bn = _conv_bn(dims)
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = bn(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            # Option B: a learned projection only where the shape changes.
            self.shortcut = nn.Sequential(
                conv(in_ch, out_ch, 1, stride=stride, bias=False),
                bn(out_ch),
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
    """CIFAR ResNet v1 of depth 6n+2 (w/2w/4w channels, w=16 by default; global average pool,
    linear head), on NCHW images, or on `[B, C, L]` signals with `dims=1`.

    `activation="prelu"`: a channel-wise PReLU (slopes start at `prelu_init`) wherever v1 has a
    ReLU (stem and both per block), w*(1 + 2n) + 2w*2n + 4w*2n slopes in all.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        activation: str = "relu",
        prelu_init: float = 0.0,
        *,
        in_channels: int = 3,
        width: int = 16,
        dims: int = 2,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        conv, bn = _conv_bn(dims)
        widths = (width, 2 * width, 4 * width)
        self.stem = nn.Sequential(
            conv(in_channels, width, 3, padding=1, bias=False), bn(width), _activation(activation, width, prelu_init)
        )
        blocks: list[nn.Module] = []
        in_ch = width
        for stage, out_ch in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, activation, prelu_init, dims))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.pool_dims = tuple(range(2, 2 + dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=self.pool_dims))


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
    n1 = param_count(CifarResNet(20, in_channels=1, dims=1))
    print(f"1-D ResNet-20 (MNIST-1D, 1 channel): {n1:,} parameters")
    n8 = param_count(CifarResNet(20, in_channels=1, width=8))
    print(f"ResNet-20 width 8 (28x28x1): {n8:,} parameters")


if __name__ == "__main__":
    main()
