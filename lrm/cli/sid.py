"""lrm sid --embeddings=E.npy --out=DIR [--method=rq_kmeans|rq_vae|kmeans|opq]
          [--levels=3] [--codebook_size=256] [--num_codebooks=32 --pca_dim=0 --whiten
          --opq_iters=0] [--data=DATASET_DIR] [--config=FILE --config.sid.FIELD=V]

Fits a SID tokenizer on item embeddings and writes DIR/codes.npy, DIR/item_ids.npy,
DIR/table.json, DIR/tokenizer/, DIR/report.json and DIR/manifest.json (last). Flags given on
the command line override the config file's `sid` section. Item ids come from `item_ids.npy`
beside the embeddings (what `lrm embed` writes) or from --data, whose leaf categories also feed
the coherence numbers of the report. With --method=opq and --data, the tokenizer is fitted on
the items of the leave-one-out training part only (as `lrm run` does) and codes every item;
without --data it is fitted on every item.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import flags
from ml_collections import config_flags

from lrm.core.errors import DataError
from lrm.core.report import print_table
from lrm.data import read_dataset
from lrm.data.splits import leave_one_out
from lrm.encoders import byo
from lrm.sid import stage
from lrm.sid.quality import format_report

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "configs" / "base.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT), "config file; its `sid` "
                                          "section gives the defaults", lock_config=True)
_EMB = flags.DEFINE_string("embeddings", None, "float32 [items, d] .npy (e.g. lrm embed's "
                           "OUT/embeddings.npy)", required=True)
_OUT = flags.DEFINE_string("out", None, "output folder", required=True)
_DATA = flags.DEFINE_string("data", None, "dataset folder: item ids and leaf categories")
_METHOD = flags.DEFINE_enum("method", None, ["rq_kmeans", "rq_vae", "kmeans", "opq"],
                            "tokenizer")
_LEVELS = flags.DEFINE_integer("levels", None, "semantic levels")
_K = flags.DEFINE_integer("codebook_size", None, "codes per level")
_METRIC = flags.DEFINE_enum("metric", None, ["l2", "cosine"], "k-means distance")
_SEED = flags.DEFINE_integer("seed", None, "random seed")
_COLLISION = flags.DEFINE_bool("collision_level", None, "append the collision-breaking level")
_NUM_CODEBOOKS = flags.DEFINE_integer("num_codebooks", None, "opq: codebooks (the SID length)")
_PCA_DIM = flags.DEFINE_integer("pca_dim", None, "opq: PCA dims kept (0: the input dim rounded "
                                "down to a multiple of num_codebooks)")
_WHITEN = flags.DEFINE_bool("whiten", None, "opq: whiten the PCA coordinates")
_OPQ_ITERS = flags.DEFINE_integer("opq_iters", None, "opq: rotation rounds (0: plain PQ)")


def main(argv):
  del argv

  overrides = {name: f.value for name, f in (
      ("method", _METHOD), ("levels", _LEVELS), ("codebook_size", _K), ("metric", _METRIC),
      ("seed", _SEED), ("collision_level", _COLLISION), ("num_codebooks", _NUM_CODEBOOKS),
      ("pca_dim", _PCA_DIM), ("whiten", _WHITEN), ("opq_iters", _OPQ_ITERS))
      if f.value is not None}
  spec = stage.SIDSpec.from_config({**_CONFIG.value.sid.to_dict(), **overrides})
  emb_path = pathlib.Path(_EMB.value)
  x = byo.load_npy_embeddings(emb_path)
  categories = fit_rows = None
  if _DATA.value:
    dataset = read_dataset(_DATA.value)
    catalog = dataset.catalog
    if len(catalog) != len(x):
      raise DataError(f"{len(x)} embedding rows for {len(catalog)} catalog items", path=emb_path)
    item_ids = catalog.item_ids
    if "categories" in catalog.fields:
      categories = catalog.leaf_category("categories")
    if spec.method == "opq":
      fit_rows = catalog.rows(np.unique(leave_one_out(dataset.sequences).train.items))
  elif (emb_path.parent / "item_ids.npy").exists():
    item_ids = np.load(emb_path.parent / "item_ids.npy")
    if len(item_ids) != len(x):
      raise DataError(f"{len(item_ids)} ids for {len(x)} embedding rows",
                      path=emb_path.parent / "item_ids.npy")
  else:
    item_ids = np.arange(1, len(x) + 1)
  result = stage.fit_sids(x, spec, item_ids=item_ids, categories=categories, fit_rows=fit_rows)
  stage.write_sids(_OUT.value, result, spec, embeddings_path=str(emb_path.resolve()))
  print(format_report(result.report))
  sizes = spec.sizes
  if len(sizes) > 4 and len(set(sizes)) == 1:   # opq's long codes
    sizes = f"{len(sizes)} x {sizes[0]}"
  print_table(["sid", ""], [["method", spec.method], ["codebook sizes", sizes],
                            ["fit seconds", round(result.fit_s, 2)],
                            ["fit items", result.report["fit_items"]],
                            ["unique with collision level",
                             result.report["unique_with_collision_level"]],
                            ["written", f"{_OUT.value}/codes.npy"]])
