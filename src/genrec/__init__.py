"""genrec: generative recommender systems on one honest evaluation protocol."""

__version__ = "0.1.0"
__all__ = ["__version__"]
