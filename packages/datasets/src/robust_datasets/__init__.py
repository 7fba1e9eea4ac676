"""robust-datasets: datasets with a known spurious correlation, generated on the fly (no download).

``synthetic-cmnist`` (digits whose colour predicts the label) and ``synthetic-waterbirds``
(bird shapes whose background predicts the label) are small enough to train on a laptop CPU,
so that methods can be tried and tested without fetching the real benchmarks. They are
registered with robust through the ``robust`` entry point (:mod:`robust_datasets.plugin`).

Importing this package does not import torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
