"""edgeprune: prune image classifiers for edge CPUs and prove the gains with honest measurements."""

__version__ = "0.1.0"

from edgeprune.errors import EdgepruneError

__all__ = ["EdgepruneError", "__version__"]
