"""The ELR study (docs/science.md): gradient explosion at init, the critical LR, the weight-dynamics
model against measurement, and the study's figures and report."""
