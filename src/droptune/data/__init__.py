"""Multi-domain datasets in DomainBed's layout, the built-in RotatedDigits, splits and loaders."""

from droptune.data.domains import ImageFolderDomains, MultiDomainDataset
from droptune.data.registry import DATASETS, DatasetSpec, get_spec, open_dataset
from droptune.data.splits import DomainSplit, split_domain

__all__ = [
    "DATASETS", "DatasetSpec", "DomainSplit", "ImageFolderDomains", "MultiDomainDataset",
    "get_spec", "open_dataset", "split_domain",
]
