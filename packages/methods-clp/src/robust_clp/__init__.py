"""CLP: a perturbation network adds a learned per-sample offset to the logits, trained online on a
clean meta set augmented with counterfactual and factual images."""
