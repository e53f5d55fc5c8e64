"""Copy the figures `make demo` drew into docs/figures/ (`make docs-figures` runs the demo first).

    python docs/copy_figures.py [WORKDIR]      # WORKDIR: the demo's --workdir root (default runs)

Each figure of docs/figures.md is listed below with the run or sweep directory it is read from,
relative to WORKDIR (a glob that must match exactly one directory: run directories end in the
hash of their config). The PNGs are re-encoded with a 256-colour palette (the plots have few
colours; a third of the size, no visible change), so the committed figures stay small.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).parent
PLAIN, RESIDUAL = "demo/shortcut=false-*", "demo/shortcut=true-*"

# docs/figures/<name>: (directory under WORKDIR, file in its figures/)
FIGURES = {
    "elr_heatmap_plain.png": (PLAIN, "elr_heatmap.png"),
    "elr_heatmap_residual.png": (RESIDUAL, "elr_heatmap.png"),
    "elr_layers_plain.png": (PLAIN, "elr_layers.png"),
    "elr_layers_residual.png": (RESIDUAL, "elr_layers.png"),
    "elr_spread_plain.png": (PLAIN, "elr_spread.png"),
    "elr_spread_residual.png": (RESIDUAL, "elr_spread.png"),
    "elr_spread_by_shortcut.png": ("demo", "elr_spread_by_shortcut.png"),
    "accuracy_vs_spread_by_shortcut.png": ("demo", "accuracy_vs_spread_by_shortcut.png"),
    "ode_discrete_plain.png": (PLAIN, "ode_discrete.png"),
    "ode_discrete_residual.png": (RESIDUAL, "ode_discrete.png"),
    "ode_discrete_spread.png": ("demo", "ode_discrete_spread.png"),
    "accuracy_vs_apl.png": ("demo-apl", "accuracy_vs_apl.png"),
    "core_profile.png": ("demo-apl", "core_profile.png"),
    "core_size.png": ("demo-apl", "core_size.png"),
    "advantage_gap.png": ("demo-apl", "advantage_gap.png"),
}


def source(workdir: Path, pattern: str, name: str) -> Path:
    dirs = sorted(p for p in workdir.glob(pattern) if p.is_dir())
    if len(dirs) != 1:
        sys.exit(f"error: {workdir / pattern} matches {len(dirs)} directories, need one; run `make demo` "
                 "into a fresh WORKDIR")
    path = dirs[0] / "figures" / name
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; run `make demo` first")
    return path


def main(argv: list[str]) -> None:
    workdir = Path(argv[0] if argv else "runs")
    out = DOCS / "figures"
    out.mkdir(exist_ok=True)
    total = 0
    for name, (pattern, file) in FIGURES.items():
        image = Image.open(source(workdir, pattern, file)).convert("RGB")
        image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            out / name, optimize=True)
        total += (out / name).stat().st_size
    print(f"{len(FIGURES)} figures in {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
