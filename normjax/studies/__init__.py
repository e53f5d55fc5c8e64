"""The two studies' commands, reports and figures, one subpackage per study; they sit above training
and sweep and import from them, never the other way.

- `elr`: the ELR study: `explosion` (`normjax explode`), `critical_lr` (`normjax critical-lr`), both
  on `measurement` (a run's start outside its Program) with the command line of `arguments`;
  `ode` (`normjax ode`), `figures` (`normjax elr-plot`), `report` (`normjax elr-report`).
- `apl`: the APL study: `nonlinear_units` (`normjax apl`), `fold_checkpoint` (`normjax fold`),
  `baselines` (parameter-matched widths), `figures` (`normjax apl-plot`), `report`
  (`normjax apl-report`).
- `report`: what both studies' reports share (a sweep's rows, mean ± std over seeds, strict JSON).
"""
