"""Datasets, read without Lightning: MNIST bundled as IDX files inside the package (see
mnist/README.md), generic IDX files (:mod:`.idx`), Fashion-MNIST, a user's IDX files and
ImageFolder trees (:mod:`.images`), CIFAR-10 through a restricted unpickler
(:mod:`.cifar`), and event data through tonic, binned into cached frames
(:mod:`.events`, :mod:`.frame_cache`). docs/DATASETS.md describes each."""

from .mnist import load_mnist_arrays

__all__ = ["load_mnist_arrays"]
