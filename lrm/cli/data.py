"""lrm data --source=SOURCE ... [--out=DIR]

Reads a dataset (raw Amazon 2014 dumps, MovieLens, RecBole atomic files, or the standard layout),
validates it, prints its statistics and, with --out, writes it in the standard layout
(sequences.txt + items.jsonl + events.npz + manifest.json).

  lrm data --source=amazon2014 --reviews=reviews_Beauty_5.json.gz --meta=meta_Beauty.json.gz --out=D
  lrm data --source=movielens --path=ml-1m --out=D
  lrm data --source=layout --path=../shared/data/amazon_beauty
  lrm data --source=movielens --path=ml-100k --format=tfds --out=D   # TFDS ArrayRecord
"""

from __future__ import annotations

from absl import flags

from lrm import data
from lrm.core.report import print_table
from lrm.data.tfds import BUILDERS, build_tfds

_SOURCE = flags.DEFINE_enum("source", "layout", ["layout", "amazon2014", "movielens", "recbole"],
                            "input format")
_PATH = flags.DEFINE_string("path", None, "input folder (layout, movielens, recbole)")
_REVIEWS = flags.DEFINE_string("reviews", None, "amazon2014: reviews_<Cat>_5.json.gz")
_META = flags.DEFINE_string("meta", None, "amazon2014: meta_<Cat>.json.gz")
_MIN_COUNT = flags.DEFINE_integer("min_count", 5, "amazon2014: k of the iterative k-core filter")
_OUT = flags.DEFINE_string("out", None, "write the dataset here, in --format")
_FORMAT = flags.DEFINE_enum("format", "layout", ["layout", "tfds"],
                            "--out holds the standard layout, or TFDS ArrayRecord (a data_dir)")


def main(argv):
  del argv
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
  if _OUT.value and _FORMAT.value == "tfds":
    _write_tfds(source, dataset)
  elif _OUT.value:
    data.write_dataset(_OUT.value, dataset)
  stats = dataset.stats()
  print_table(["dataset", dataset.name], [[k, v] for k, v in stats.items()])


def _write_tfds(source: str, dataset) -> None:
  if source not in BUILDERS:
    raise flags.ValidationError(f"--format=tfds reads --source in {sorted(BUILDERS)}")
  args = ({"reviews": _REVIEWS.value, "meta": _META.value, "min_count": _MIN_COUNT.value}
          if source == "amazon2014" else {"path": _PATH.value})
  name, _ = build_tfds(_OUT.value, source, dataset=dataset, **args)
  print(f"TFDS dataset {name} in {_OUT.value}; train on it with --config.data.source=tfds "
        f"--config.data.tfds={name} --config.data.data_dir={_OUT.value}")
