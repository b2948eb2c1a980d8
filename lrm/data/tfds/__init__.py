"""Datasets as TFDS ArrayRecord (no TensorFlow): builders per source, readers, Grain shards.

tensorflow-datasets and array-record are dependencies of lrm; TensorFlow is never imported.

  name, _ = build_tfds(out, "layout", path="../shared/data/amazon_beauty")
  dataset = load_tfds(name, out)                        # the in-memory Dataset
  it = user_batches(user_source(name, out), batch_size=64, max_len=50, seed=0)
"""

from __future__ import annotations

from lrm.data.tfds.builders import (BUILDERS, LrmAmazon2014, LrmBuilder, LrmLayout, LrmMovielens,
                                    build_tfds)
from lrm.data.tfds.loader import PadUser, SequenceRecords, shard_range, user_batches
from lrm.data.tfds.reader import item_source, load_tfds, user_source

__all__ = [
    "BUILDERS", "LrmBuilder", "LrmLayout", "LrmMovielens", "LrmAmazon2014", "build_tfds",
    "load_tfds", "user_source", "item_source", "user_batches", "shard_range", "PadUser",
    "SequenceRecords",
]
