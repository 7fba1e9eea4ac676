"""Sweeps for robust: a grid of runs from one TOML spec, launched locally or as Slurm array jobs (robust sweep)."""
