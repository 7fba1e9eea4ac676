"""CFGen: train on counterfactual (foreground removed) and factual (background replaced) images."""
