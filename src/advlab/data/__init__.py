"""Datasets as tensors: float32 NCHW images in [0, 1], int64 labels."""

from .dataset import Dataset, dataset_checksum
from .loaders import DATASET_NAMES, load_dataset
from .split import stratified_split, stratified_subset

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "dataset_checksum",
    "load_dataset",
    "stratified_split",
    "stratified_subset",
]
