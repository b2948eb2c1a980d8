"""lrm data --source=SOURCE ... [--out=DIR]

Reads a dataset (raw Amazon 2014 dumps, MovieLens, RecBole atomic files, or the standard layout),
validates it, prints its statistics and, with --out, writes it in the standard layout
(sequences.txt + items.jsonl + events.npz + manifest.json).

  lrm data --source=amazon2014 --reviews=reviews_Beauty_5.json.gz --meta=meta_Beauty.json.gz --out=D
  lrm data --source=movielens --path=ml-1m --out=D
  lrm data --source=layout --path=../shared/data/amazon_beauty
"""

from __future__ import annotations

from absl import flags

_SOURCE = flags.DEFINE_enum("source", "layout", ["layout", "amazon2014", "movielens", "recbole"],
                            "input format")
_PATH = flags.DEFINE_string("path", None, "input folder (layout, movielens, recbole)")
_REVIEWS = flags.DEFINE_string("reviews", None, "amazon2014: reviews_<Cat>_5.json.gz")
_META = flags.DEFINE_string("meta", None, "amazon2014: meta_<Cat>.json.gz")
_MIN_COUNT = flags.DEFINE_integer("min_count", 5, "amazon2014: k of the iterative k-core filter")
_OUT = flags.DEFINE_string("out", None, "write the standard layout here")


def main(argv):
  del argv
  from lrm import data
  from lrm.core.report import print_table
  source = _SOURCE.value
  if source == "amazon2014":
    if not (_REVIEWS.value and _META.value):
      raise flags.ValidationError("--source=amazon2014 needs --reviews and --meta")
    dataset = data.read_amazon_2014(_REVIEWS.value, _META.value, min_count=_MIN_COUNT.value)
  else:
    if not _PATH.value:
      raise flags.ValidationError(f"--source={source} needs --path")
    reader = {"layout": data.read_dataset, "movielens": data.read_movielens,
              "recbole": data.read_recbole_atomic}[source]
    dataset = reader(_PATH.value)
  if _OUT.value:
    data.write_dataset(_OUT.value, dataset)
  stats = dataset.stats()
  print_table(["dataset", dataset.name], [[k, v] for k, v in stats.items()])
