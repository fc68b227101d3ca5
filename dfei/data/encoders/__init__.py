"""The fitted raw-value -> id transform of a dataset: part of the data and of the model.

A converted dataset keeps the encoders it was made with (`encoders/` beside its splits, listed in
dataset.json with a content digest each); checkpoints record the digests and carry the files;
exported models carry them too, so batch and online scoring encode raw values exactly as training
did. numpy, pyarrow and pandas only (no Ray, no torch): importable from the serving loader.
"""
from dfei.data.encoders.buckets import Buckets
from dfei.data.encoders.hashing import HashBuckets, fnv1a64, hash64
from dfei.data.encoders.transform import DomainMap, FeatureEncoder, FeatureTransform, LabelRule, load_transform
from dfei.data.encoders.vocabulary import Vocabulary

__all__ = ["Buckets", "DomainMap", "FeatureEncoder", "FeatureTransform", "HashBuckets", "LabelRule", "Vocabulary",
           "fnv1a64", "hash64", "load_transform"]
