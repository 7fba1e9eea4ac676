"""DisEnt, LfF and the vanilla baseline: debiasing by relative difficulty, without bias labels."""
