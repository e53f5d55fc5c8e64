"""Copy the figures `make demo` drew into docs/figures/ (`make docs-figures` runs the demo first), or
those of the ELR reproduction into docs/reproduction/ (`make reproduce-elr` runs its sweeps first).

    python docs/copy_figures.py [WORKDIR]                  # WORKDIR: the --workdir root (default runs)
    python docs/copy_figures.py --reproduction [WORKDIR]   # also copies elr_report.json
    python docs/copy_figures.py --apl [WORKDIR] [--size S] # the APL sweeps' and apl_report.json, into docs/reproduction/apl[-S]/
    python docs/copy_figures.py --elr-conv [WORKDIR] --size S  # `make elr-conv SIZE=S`, into docs/reproduction/elr-S/

Each figure of docs/figures.md is listed below with the run or sweep directory it is read from,
relative to WORKDIR (a glob that must match exactly one directory: run directories end in the
hash of their config). The PNGs are re-encoded with a 256-colour palette (the plots have few
colours; a third of the size, no visible change), so the committed figures stay small.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).parent
# The smoke demo (`make demo`: its own directories per size, runs/demo-SIZE and runs/demo-apl-SIZE)
DEMO, DEMO_APL = "demo-smoke", "demo-apl-smoke"
PLAIN, RESIDUAL = f"{DEMO}/shortcut=false-*", f"{DEMO}/shortcut=true-*"

# docs/figures/<name>: (directory under WORKDIR, file in its figures/)
FIGURES = {
    "elr_heatmap_plain.png": (PLAIN, "elr_heatmap.png"),
    "elr_heatmap_residual.png": (RESIDUAL, "elr_heatmap.png"),
    "elr_layers_plain.png": (PLAIN, "elr_layers.png"),
    "elr_layers_residual.png": (RESIDUAL, "elr_layers.png"),
    "elr_spread_plain.png": (PLAIN, "elr_spread.png"),
    "elr_spread_residual.png": (RESIDUAL, "elr_spread.png"),
    "elr_spread_by_shortcut.png": (DEMO, "elr_spread_by_shortcut.png"),
    "accuracy_vs_spread_by_shortcut.png": (DEMO, "accuracy_vs_spread_by_shortcut.png"),
    "ode_discrete_plain.png": (PLAIN, "ode_discrete.png"),
    "ode_discrete_residual.png": (RESIDUAL, "ode_discrete.png"),
    "ode_discrete_spread.png": (DEMO, "ode_discrete_spread.png"),
    "accuracy_vs_apl.png": (DEMO_APL, "accuracy_vs_apl.png"),
    "core_profile.png": (DEMO_APL, "core_profile.png"),
    "core_size.png": (DEMO_APL, "core_size.png"),
    "advantage_gap.png": (DEMO_APL, "advantage_gap.png"),
}


# docs/reproduction/<name>: (directory under WORKDIR, file in it or its figures/)
ELR_REPORT = "elr-report-medium"
REPRODUCTION = {
    "explosion_factor_mlp.png": ("explode-mlp-medium", "explosion_factor.png"),
    "explosion_layers_mlp.png": ("explode-mlp-medium", "explosion_layers.png"),
    "explosion_factor_resnet.png": ("explode-resnet-medium", "explosion_factor.png"),
    "elr_spread_trajectories.png": ("sweep-elr_trajectories-medium", "elr_spread_by_lr.png"),
    "accuracy_vs_spread_trajectories.png": ("sweep-elr_trajectories-medium", "accuracy_vs_spread_by_lr.png"),
    "ode_spread_trajectories.png": ("sweep-elr_trajectories-medium", "ode_discrete_spread.png"),
    "ode_plain_depth41_lr0.03.png": (
        "sweep-elr_trajectories-medium/lr=0.03-depth=41-momentum=0-shortcut=false-*",
        "ode_discrete.png",
    ),
    "elr_order_flip.png": (ELR_REPORT, "elr_order_flip.png"),
    "base_drift.png": (ELR_REPORT, "base_drift.png"),
    "critical_lr_plain.png": ("critical_lr-medium-shortcut=false", "critical_lr.png"),
    "critical_lr_residual.png": ("critical_lr-medium-shortcut=true", "critical_lr.png"),
    "critical_lr_plain_si.png": ("critical_lr-medium-si-shortcut=false", "critical_lr.png"),
    # every regimes sweep (LR 0.3 and 3, the geometric-mean uniform ELR) in one figure, from the report
    "accuracy_vs_spread_regimes.png": (ELR_REPORT, "accuracy_vs_spread_regimes.png"),
    "elr_spread_regimes.png": ("sweep-elr_regimes-medium", "elr_spread_by_name.png"),
    "decisive_arms.png": (ELR_REPORT, "decisive_arms.png"),
    "elr_pilot_results.csv": ("sweep-elr_pilot-medium", "results.csv"),  # the pilot that picked the decisive LR
    "elr_report.json": (ELR_REPORT, "elr_report.json"),
}


# docs/reproduction/apl[-SIZE]/<name>: the APL sweeps of a size and their report (`make reproduce-apl`);
# `normjax apl-plot` draws the report's figures too, so they are copied once, from the report. The
# sweeps are those the report read (`make apl SIZE=fmnist_conv` runs no λ sweep).
def apl_files(size: str, workdir: Path) -> dict:
    report, baselines = f"apl-report-{size}", f"sweep-apl_baselines-{size}"
    read = source(workdir, report, "apl_report.json")
    swept = {Path(s["sweep"]).name for s in json.loads(read.read_text())["sweeps"]}
    kinds = [(k, f"sweep-apl_{k}-{size}") for k in ("sparsity", "targets") if f"sweep-apl_{k}-{size}" in swept]
    return {
        **{
            f"{kind}_{n}.png": (report, f"{sw}_{n}.png")
            for kind, sw in kinds
            for n in ("collapse", "gap", "core", "vs_baselines")
        },
        **{f"{kind}_core_profile.png": (sw, "core_profile.png") for kind, sw in kinds},
        **{f"{kind}_{n}": (sw, n) for kind, sw in kinds for n in ("apl_table.csv", "results.csv", "results_agg.csv")},
        "baselines_results.csv": (baselines, "results.csv"),
        "baselines_results_agg.csv": (baselines, "results_agg.csv"),
        "apl_report.json": (report, "apl_report.json"),
    }


# docs/reproduction/elr-SIZE/<name>: the ELR study in conv nets (`make elr-conv SIZE=...`)
def elr_conv_files(size: str) -> dict:
    sweep, report = f"sweep-elr_trajectories-{size}", f"elr-report-{size}"
    return {
        "elr_spread_trajectories.png": (sweep, "elr_spread_by_lr.png"),
        "accuracy_vs_spread_trajectories.png": (sweep, "accuracy_vs_spread_by_lr.png"),
        "ode_spread_trajectories.png": (sweep, "ode_discrete_spread.png"),
        "elr_order_flip.png": (report, "elr_order_flip.png"),
        "base_drift.png": (report, "base_drift.png"),
        "explosion_factor_resnet.png": (f"explode-resnet-{size}", "explosion_factor.png"),
        "critical_lr_plain.png": (f"critical_lr-{size}-shortcut=false", "critical_lr.png"),
        "critical_lr_residual.png": (f"critical_lr-{size}-shortcut=true", "critical_lr.png"),
        "results.csv": (sweep, "results.csv"),
        "pilot_results.csv": (f"sweep-elr_pilot-{size}", "results.csv"),  # plain vs residual over LR, one seed
        "elr_report.json": (report, "elr_report.json"),
        # the decisive tests, where `sweep_elr_decisive.py` has the size (the Makefile's ELR_DECISIVE_SIZES)
        **({"decisive_arms.png": (report, "decisive_arms.png")} if size == "mnist1d" else {}),
    }


def source(workdir: Path, pattern: str, name: str) -> Path:
    dirs = sorted(p for p in workdir.glob(pattern) if p.is_dir())
    if len(dirs) != 1:
        sys.exit(
            f"error: {workdir / pattern} matches {len(dirs)} directories, need one; run `make demo` "
            "into a fresh WORKDIR"
        )
    path = next((p for p in (dirs[0] / name, dirs[0] / "figures" / name) if p.is_file()), None)
    if path is None:
        sys.exit(f"error: {dirs[0] / 'figures' / name} does not exist; run `make demo` (or `make reproduce-elr`) first")
    return path


def main(argv: list[str]) -> None:
    size = "medium"
    if "--size" in argv:  # the APL sweeps' size: medium into apl/, another into apl-SIZE/
        i = argv.index("--size")
        size, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    apl_out = DOCS / "reproduction" / ("apl" if size == "medium" else f"apl-{size}")
    workdir_args = [a for a in argv if not a.startswith("--")]
    workdir = Path(workdir_args[0] if workdir_args else "runs")
    # Each set's files (read when chosen: the APL set reads its report) and folder.
    sets = {
        "--reproduction": (lambda: REPRODUCTION, DOCS / "reproduction"),
        "--apl": (lambda: apl_files(size, workdir), apl_out),
        "--elr-conv": (lambda: elr_conv_files(size), DOCS / "reproduction" / f"elr-{size}"),
    }
    files, out = next((sets[a] for a in argv if a in sets), (lambda: FIGURES, DOCS / "figures"))
    files = files()
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, (pattern, file) in files.items():
        path = source(workdir, pattern, file)
        if name.endswith((".json", ".csv")):
            (out / name).write_bytes(path.read_bytes())
        else:
            image = Image.open(path).convert("RGB")
            image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
                out / name, optimize=True
            )
        total += (out / name).stat().st_size
    print(f"{len(files)} files in {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
