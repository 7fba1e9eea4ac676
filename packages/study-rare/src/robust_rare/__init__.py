"""Rare spurious correlations (seed 002, yangarbiter/rare-spurious-correlation), for robust."""
