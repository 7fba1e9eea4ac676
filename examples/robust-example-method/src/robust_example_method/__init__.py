"""An example robust plugin: mixup (Zhang et al., ICLR 2018) as the method ``mixup``.

Kept import-free: ``robust`` loads :mod:`robust_example_method.plugin` (torch-free) on every
command, and imports :mod:`robust_example_method.method` (torch) only when a run needs it.
"""

__version__ = "0.1.0"
