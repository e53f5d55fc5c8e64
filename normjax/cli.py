"""`normjax` command line: train, eval, sweep, plan, results, plot, and the studies' commands
(`python -m normjax` too).

Bad input ends with one line `error: ...` and exit code 2, as does a command that needs the
training stack where only the base install is (`pip install 'normjax[train]'`); a diverged run
exits 3. Ctrl-C (SIGINT) or SIGTERM during training saves the step reached, says so in one line
and exits 130 or 143 (128 + the signal's number).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from normjax.config import SIZES
from normjax.errors import Interrupted, UserError, missing_extra


def _add_set(parser: argparse.ArgumentParser, text: str) -> None:
    """The repeatable `--set KEY=VALUE` override of `train`, `sweep` and `plan`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=text)


def _parser() -> argparse.ArgumentParser:
    from normjax import __version__

    p = argparse.ArgumentParser(prog="normjax", description=__doc__.splitlines()[0])
    p.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print normjax's version and exit"
    )
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do; `normjax COMMAND -h` describes its arguments",
    )
    t = sub.add_parser("train", help="train (or resume) one run")
    t.add_argument("config", help="experiment file, e.g. experiments/resnet_digits.py")
    t.add_argument(
        "--size",
        default="smoke",
        help="smoke (seconds on CPU), medium (Fashion-MNIST, minutes), gpu (the study files: CIFAR ResNets on "
        "Fashion-MNIST, one GPU), full (paper scale), and for the files that have them: mnist1d (1-D conv nets "
        "on MNIST-1D, CPU), fmnist_conv (small conv nets on Fashion-MNIST, CPU), imagenet (ResNet-50 on ImageNet)",
    )
    _add_set(t, "override a config key, e.g. --set optim.lr=0.05 (repeatable)")
    t.add_argument("--workdir", help="run directory (default runs/<config name>)")
    t.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    t.add_argument(
        "--json",
        action="store_true",
        help="print the run's summary as one JSON object (for scripts) instead of a readable summary",
    )
    e = sub.add_parser("eval", help="evaluate a run directory's latest checkpoint (prints one JSON object)")
    e.add_argument("rundir", help="run directory of `normjax train` or of a sweep run (config.json and checkpoints/)")
    w = sub.add_parser("sweep", help="run (this shard of) a sweep; complete runs are skipped, interrupted ones resume")
    w.add_argument("spec", help="sweep file, e.g. experiments/sweep_depth.py")
    w.add_argument("--size", default="smoke", help=f"{', '.join(SIZES)} (the sizes the sweep file has)")
    w.add_argument("--workdir", help="sweep directory (default runs/<sweep name>)")
    w.add_argument("--shard", default="0/1", help="i/n: run every n-th run starting at i (job arrays, TPU workers)")
    w.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run only the runs with this varied value, as run names write it (task=fashion_mnist; repeatable)",
    )
    _add_set(w, "override a config key in every run (repeatable)")
    w.add_argument(
        "--group-size", type=int, default=0, help="runs vectorized together (0: automatic, by backend and memory)"
    )
    w.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    n = sub.add_parser(
        "plan",
        help="compile a sweep's programs for a TPU or GPU that is not here: memory per device, the largest "
        "group that fits, flops, a roofline bound on the time",
    )
    n.add_argument("spec", help="sweep or experiment file, e.g. experiments/sweep_lr.py")
    n.add_argument("--size", default="smoke", help="the file's size, as for `normjax sweep`")
    n.add_argument(
        "--target",
        required=True,
        help="the chip: tpu-v5e-8, tpu-v4-8, tpu-v6e-8, ... (libtpu: pip install 'normjax[plan-tpu]'), or h100, "
        "h200, a100 (the CUDA plugin: pip install 'normjax[plan-gpu]')",
    )
    _add_set(n, "override a config key in every run (repeatable)")
    n.add_argument("--max-group", type=int, default=64, help="the largest vectorized group compiled (default 64)")
    n.add_argument("--json", action="store_true", help="print the report as one JSON object instead of tables")
    r = sub.add_parser("results", help="table of a sweep's runs (CSV + terminal), mean ± std over seeds")
    r.add_argument("sweepdir", help="sweep directory (the --workdir of `normjax sweep`; holds sweep.json)")
    r.add_argument("--over", default="train.seed", help="key averaged over (default train.seed)")
    f = sub.add_parser("plot", help="figures (PNG and PDF) of a sweep, seeds averaged with error bands")
    f.add_argument("sweepdir", help="sweep directory (the --workdir of `normjax sweep`; holds sweep.json)")
    f.add_argument("--x", required=True, help="varied key on the x axis, e.g. model.depth, or a final metric, e.g. apl")
    f.add_argument("--y", default="test_accuracy", help="final metric, e.g. test_accuracy or a hook's (apl)")
    f.add_argument("--hue", help="varied key drawn as separate lines")
    f.add_argument("--panel", help="with a metric on x: the varied key whose values get their own panels")
    f.add_argument("--log-x", action="store_true", help="logarithmic x axis (positive numeric x values)")
    f.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="LABEL=Y",
        help="a reference line at y=Y labelled LABEL (repeatable), e.g. 'published CNN=0.94'",
    )
    d = sub.add_parser(
        "prepare",
        help="write a TFDS dataset from local files, offline and without TensorFlow "
        "(fashion_mnist from Debian's dataset-fashion-mnist)",
    )
    d.add_argument("name", help="the TFDS name; allowed: fashion_mnist")
    d.add_argument(
        "--from",
        dest="source_dir",
        metavar="DIR",
        help="folder holding the four IDX .gz files (default: where `dpkg -L dataset-fashion-mnist` puts them)",
    )
    d.add_argument(
        "--data-dir",
        metavar="DIR",
        help="TFDS data dir (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets, as data.data_dir)",
    )
    for name, (_, _, text) in STUDY_COMMANDS.items():  # their own parsers read the rest of the line
        sub.add_parser(name, help=text, add_help=False).add_argument(
            "args", nargs=argparse.REMAINDER, help=f"the arguments of {name}; see `normjax {name} -h`"
        )
    return p


# Study commands: (module, entry function, help). Each entry parses its own arguments.
STUDY_COMMANDS = {
    "elr-plot": (
        "normjax.studies.elr.figures",
        "elr_plot_main",
        "ELR figures of a run (per-layer heatmap, lines, spread) or a sweep (spread, accuracy vs spread)",
    ),
    "explode": (
        "normjax.studies.elr.explosion",
        "explode_main",
        "gradient explosion at init: per-layer gradient norms over depth, plain vs residual",
    ),
    "apl": (
        "normjax.studies.apl.nonlinear_units",
        "apl_main",
        "nonlinear units, average path length and core network of a run's (or sweep's) checkpoint",
    ),
    "apl-plot": (
        "normjax.studies.apl.figures",
        "apl_plot_main",
        "APL study figures of a sparsity sweep: accuracy vs APL per regime and task, core network, "
        "advantage gap, baselines",
    ),
    "fold": (
        "normjax.studies.apl.fold_checkpoint",
        "fold_main",
        "fold a run's linear units away: BN into convs, linear stretches merged; depth, params, FLOPs",
    ),
    "ode": (
        "normjax.studies.elr.ode",
        "ode_main",
        "the weight-dynamics model's prediction against a run's (or sweep's) measured ELRs, or alone",
    ),
    "elr-report": (
        "normjax.studies.elr.report",
        "elr_report_main",
        "the ELR study's numbers claim by claim from its sweeps (explosion, trajectories, critical LR, regimes)",
    ),
    "apl-report": (
        "normjax.studies.apl.report",
        "apl_report_main",
        "the APL study's numbers claim by claim from its sweeps (collapse, core, advantage gap, baselines, folding)",
    ),
    "critical-lr": (
        "normjax.studies.elr.critical_lr",
        "critical_lr_main",
        "the critical LR measured on a real network (post-step spread against LR) vs 1/sqrt(a_max a_min)",
    ),
}


class _Captured(Exception):
    """Raised in place of parsing: carries the parser a study command built."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `normjax NAME`: a subcommand's, or the one a study command builds inside its
    entry function (caught before it parses), for the CLI reference and its tests.

    Example:
      >>> command_parser("fold").prog
      'normjax fold'
    """
    if name not in STUDY_COMMANDS:
        subs = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
        if name not in subs.choices:
            raise UserError(f"command {name!r} is unknown; allowed: {', '.join([*subs.choices])}")
        return subs.choices[name]
    import importlib

    module, fn, _ = STUDY_COMMANDS[name]
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        getattr(importlib.import_module(module), fn)([])
    except _Captured as e:
        return e.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"normjax {name} returned without parsing its arguments")


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the CLI: `"normjax"` and `"normjax CMD"` for each command.

    Example:
      >>> sorted(parsers())[:3]
      ['normjax', 'normjax apl', 'normjax apl-plot']
    """
    subs = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {"normjax": _parser(), **{f"normjax {name}": command_parser(name) for name in subs.choices}}


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STUDY_COMMANDS:
        import importlib

        module, fn, _ = STUDY_COMMANDS[argv[0]]
        return getattr(importlib.import_module(module), fn)(argv[1:])
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named with the command's own usage (`normjax train FILE --lr 0.1`), not the top level's
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "prepare":  # before the training imports: needs neither jax nor a config
        from normjax.data.prepare import prepare

        print(prepare(args.name, source_dir=args.source_dir, data_dir=args.data_dir).message)
        return 0
    if args.command == "train":
        workdir = args.workdir or os.path.join("runs", Path(args.config).stem)
        if not (args.distributed or os.environ.get("NORMJAX_DISTRIBUTED") == "1"):
            from normjax.training.lock import RunLock  # no jax: a live run is refused in a moment

            RunLock(workdir).check_free()  # (several processes: process 0 checks, in `train`)
    from normjax.config import load_config
    from normjax.parallel import maybe_initialize_distributed
    from normjax.training.loop import EXIT_DIVERGED, evaluate_run, train

    if args.command == "train":
        cfg = load_config(args.config, size=args.size, overrides=args.overrides)  # validating imports jax
        maybe_initialize_distributed(args.distributed)
        summary = train(cfg, workdir)
        if summary["status"] == "diverged":
            if args.json:  # a script reads the record whatever the outcome (exit code 3 says diverged)
                print(json.dumps(_plain(summary)))
            print(f"diverged: {summary['message']} ({workdir})", file=sys.stderr)
            return EXIT_DIVERGED
        print(json.dumps(_plain(summary)) if args.json else format_summary(summary, workdir))
        return 0
    if args.command == "eval":
        print(json.dumps(_plain(evaluate_run(args.rundir))))
        return 0
    if args.command == "sweep":
        from normjax.sweep.runner import parse_shard, run_sweep

        if args.group_size < 0:
            raise UserError(f"--group-size {args.group_size} must be >= 0 (0 = automatic)")
        shard = parse_shard(args.shard)
        maybe_initialize_distributed(args.distributed)
        results = run_sweep(
            args.spec,
            size=args.size,
            workdir=args.workdir,
            shard=shard,
            overrides=args.overrides,
            group_size=args.group_size,
            only=args.only,
        )
        counts = {s: sum(r["status"] == s for r in results.values()) for s in ("done", "diverged", "failed")}
        print(f"sweep finished: {counts['done']} done, {counts['diverged']} diverged, {counts['failed']} failed")
        return 1 if counts["failed"] else 0
    if args.command == "plan":
        from normjax.sweep.plan import format_plan, plan

        report = plan(args.spec, size=args.size, target=args.target, overrides=args.overrides, max_group=args.max_group)
        print(json.dumps(report) if args.json else format_plan(report))
        return 0
    if args.command == "results":
        from normjax.sweep.results import report

        print(report(args.sweepdir, over=args.over))
        return 0
    from normjax.sweep.plot import parse_refs, plot_sweep

    refs = parse_refs(args.ref)
    for path in plot_sweep(
        args.sweepdir, x=args.x, y=args.y, hue=args.hue, log_x=args.log_x, panel=args.panel, refs=refs
    ):
        print(path)
    return 0


def format_duration(seconds: float) -> str:
    """A duration as people read it: `8.3 s`, `1 min 23 s`, `2 h 05 min`.

    Example:
      >>> format_duration(83.2274763584137)
      '1 min 23 s'
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _plain(v: object) -> object:
    """`v` as strict JSON values: non-finite floats as 'nan'/'inf' strings, as summary.json stores them."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _number(v: object) -> float | None:
    """A summary value as a finite float, else None (summary.json stores non-finite ones as 'nan'/'inf')."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def format_summary(summary: dict, rundir: str | os.PathLike) -> str:
    """A few readable lines on a finished run: status, accuracies and losses, steps, time, where it is.

    The whole summary stays in `RUNDIR/summary.json` (`normjax train --json` prints it).

    Args:
      summary: what `normjax.training.loop.train` returns (the run's summary.json).
      rundir: the run directory.

    Returns:
      The text, without a trailing newline.

    Example:
      >>> print(format_summary({"status": "done", "step": 600, "total_steps": 600, "epochs": 12.0,
      ...                       "test_accuracy": 0.96, "test_loss": 0.13, "train_accuracy": 0.99,
      ...                       "train_loss": 0.03, "wall_time": 83.2}, "/tmp/r20"))
      done: test accuracy 96.00% (loss 0.1300), train accuracy 99.00% (loss 0.0300)
      600/600 steps (12 epochs) in 1 min 23 s
      run directory: /tmp/r20 (summary.json, metrics.jsonl, checkpoints/)
    """
    from normjax.training.rundir import RunDir

    path = Path(rundir).absolute()
    status = str(summary.get("status", "unknown"))
    if summary.get("already"):
        status = f"already {status} (nothing trained; a new config needs a new --workdir)"
    parts = []
    for split in ("test", "train"):
        acc, loss = _number(summary.get(f"{split}_accuracy")), _number(summary.get(f"{split}_loss"))
        if acc is not None:
            parts.append(f"{split} accuracy {100 * acc:.2f}%" + (f" (loss {loss:.4f})" if loss is not None else ""))
    lines = [f"{status}: {', '.join(parts)}" if parts else status]
    step, total = summary.get("step"), summary.get("total_steps")
    if step is not None:
        progress = f"{step}/{total} steps" if total is not None else f"{step} steps"
        epochs = _number(summary.get("epochs"))
        if epochs is not None:
            progress += f" ({epochs:.3g} epochs)"
        wall = _number(summary.get("wall_time"))
        lines.append(progress + (f" in {format_duration(wall)}" if wall is not None else ""))
    lines.append(f"run directory: {path} (summary.json, metrics.jsonl, checkpoints/)")
    figures = RunDir(path).figures
    if figures.is_dir() and any(figures.iterdir()):
        lines.append(f"figures: {figures}")
    return "\n".join(lines)


def _interrupt_on_sigterm() -> None:
    """A job killed with SIGTERM (a preempted TPU VM, `scancel`, `kill`) stops as on Ctrl-C: while
    training, at the end of the chunk it is in, saving the state reached; the run's summary says
    `interrupted` with the step it resumes from. Exit code 143 (128 + 15, as a shell's)."""

    def handler(signum, frame):
        raise Interrupted(signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding program): leave its handlers alone
        pass


def main(argv: list[str] | None = None) -> None:
    _interrupt_on_sigterm()
    try:
        code = run(argv)
    except (UserError, ModuleNotFoundError) as e:
        error = e
        if isinstance(e, ImportError):  # the training stack missing (a base install): one line naming the extra
            command = next((w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")), "")
            error = missing_extra(e, f"normjax {command}".strip())
            if not isinstance(error, UserError):
                raise
        print(f"error: {error}", file=sys.stderr)
        code = UserError.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: 128 + the signal's number, as a shell's
        if not isinstance(e, Interrupted):
            e = Interrupted(signal.SIGINT)  # Python's own SIGINT handler (outside training)
        print(f"interrupted: {e}", file=sys.stderr)
        code = e.exit_code
    except BrokenPipeError:
        # The reader of our output went away (`normjax fold RUN | head`): stop quietly, as `cat`
        # does; stdout is pointed at devnull so that the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
