"""`normjax` command line: train, eval (and `python -m normjax`).

Bad input ends with one line `error: ...` and exit code 2; a diverged run exits 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from normjax.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="normjax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or resume) one run")
    t.add_argument("config", help="experiment file, e.g. experiments/resnet_digits.py")
    t.add_argument("--size", default="smoke", help="smoke (seconds on CPU) or full (paper scale)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.05 (repeatable)")
    t.add_argument("--workdir", help="run directory (default runs/<config name>)")
    t.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    e = sub.add_parser("eval", help="evaluate a run directory's latest checkpoint")
    e.add_argument("rundir")
    return p


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from normjax.config import load_config
    from normjax.parallel import maybe_initialize_distributed
    from normjax.training.loop import EXIT_DIVERGED, evaluate_run, train

    if args.command == "train":
        cfg = load_config(args.config, size=args.size, overrides=args.overrides)
        maybe_initialize_distributed(args.distributed)
        workdir = args.workdir or os.path.join("runs", Path(args.config).stem)
        summary = train(cfg, workdir)
        if summary["status"] == "diverged":
            print(f"diverged: {summary['message']} ({workdir})", file=sys.stderr)
            return EXIT_DIVERGED
        print(json.dumps({k: summary[k] for k in ("status", "step", "train_accuracy", "test_accuracy", "wall_time")
                          if k in summary}))
        print(f"run directory: {Path(workdir).absolute()}")
        return 0
    print(json.dumps(evaluate_run(args.rundir)))
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted: the run resumes from its last checkpoint when started again", file=sys.stderr)
        code = 130
    sys.exit(code)
