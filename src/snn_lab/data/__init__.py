"""Datasets: MNIST bundled as IDX files inside the package (see mnist/README.md)."""

from .mnist import DataError, load_mnist_arrays

__all__ = ["DataError", "load_mnist_arrays"]
