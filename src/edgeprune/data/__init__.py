"""Data sets as decoded uint8 tensors (decoded once, cached on disk) and fast tensor batches.

`load_data(spec)` accepts `digits`, a torchvision CIFAR-10 root, an ImageFolder tree with
train/ and test/, or a single class-folder tree; `BatchLoader` batches a `Split`."""

from edgeprune.data.bundle import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, DataBundle, Split
from edgeprune.data.cache import DATA_FORMAT_VERSION, data_cache_dir
from edgeprune.data.check import check_data
from edgeprune.data.load import channel_stats, load_data
from edgeprune.data.augment import AUGMENTS, augment_batch
from edgeprune.data.loader import BALANCES, BatchLoader, class_loss_weights, random_crop_flip
from edgeprune.data.options import NORMALIZATIONS, DataOptions, SplitRecord, check_same_split, split_defaults
from edgeprune.data.sources import ACCEPTED_FORMS

__all__ = [
    "AUGMENTS",
    "BALANCES",
    "augment_batch",
    "class_loss_weights",
    "ACCEPTED_FORMS",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATA_FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "BatchLoader",
    "DataBundle",
    "DataOptions",
    "SplitRecord",
    "check_same_split",
    "split_defaults",
    "Split",
    "data_cache_dir",
    "channel_stats",
    "check_data",
    "load_data",
    "random_crop_flip",
]
