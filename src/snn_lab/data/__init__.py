"""Datasets: MNIST bundled as IDX files inside the package (see mnist/README.md)."""

from .mnist import load_mnist_arrays

__all__ = ["load_mnist_arrays"]
