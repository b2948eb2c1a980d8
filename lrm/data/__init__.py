"""Catalogs, interaction sequences, their on-disk layout, readers for public formats, splits."""

from __future__ import annotations

from lrm.data.amazon import read_amazon_2014
from lrm.data.layout import read_dataset, read_items_jsonl, read_sequences_txt, write_dataset
from lrm.data.movielens import read_movielens, read_recbole_atomic
from lrm.data.splits import (ColdStartSplit, EvalSet, LeaveOneOut, TimeSplit, cold_start_split,
                             leave_one_out, time_split)
from lrm.data.types import Catalog, Dataset, Sequences

__all__ = [
    "Catalog", "Dataset", "Sequences",
    "read_dataset", "write_dataset", "read_items_jsonl", "read_sequences_txt",
    "read_amazon_2014", "read_movielens", "read_recbole_atomic",
    "EvalSet", "LeaveOneOut", "ColdStartSplit", "TimeSplit",
    "leave_one_out", "cold_start_split", "time_split",
]
