"""Serverless inference for optimized DenseNet-121 image classifiers."""

__version__ = "0.1.0"
