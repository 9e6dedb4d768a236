"""Custom PyTorch ops of the renderer. Importing this package registers them
(``torch.ops.avatarcam.*``)."""
from .grid_sample3d import *  # noqa: F403 - the package re-exports the module's public names
from .grid_sample3d import __all__  # noqa: F401
