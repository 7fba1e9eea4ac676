"""Baselines for robust: JTT, DFR, group/class rebalancing and CVaR-DRO."""
