"""The APL study (docs/science.md): nonlinear units and average path length of a checkpoint, folding
its linear units away, the parameter-matched baselines, and the study's figures and report."""
