"""The commands that run one stage on files, not a job on a config: `world`, `data`, `embed`,
`sid`. Each function defines its command's flags (only the chosen command's exist, so `lrm
embed --help` lists those of `embed` alone) and returns its main(argv).

  lrm world --out=DIR [--config=configs/base.py] [--config.world.FIELD=VALUE ...]
      the synthetic world: the standard dataset layout + truth.npz with the planted structure
  lrm data --source=SOURCE ... [--out=DIR] [--format=layout|tfds]
      raw Amazon 2014 dumps, MovieLens, RecBole atomic files or the standard layout, validated,
      with statistics; with --out, written in the standard layout (or TFDS ArrayRecord):
        lrm data --source=amazon2014 --reviews=reviews_Beauty_5.json.gz --meta=meta_Beauty.json.gz --out=D
        lrm data --source=movielens --path=ml-1m --out=D
        lrm data --source=layout --path=../shared/data/amazon_beauty
        lrm data --source=movielens --path=ml-100k --format=tfds --out=D
  lrm embed --data=DIR [--encoder=PATH_OR_NAME] --out=OUT
      OUT/embeddings.npy (float32, one row per item in catalog order), OUT/item_ids.npy and
      OUT/manifest.json; without --encoder the hashing encoder, and the manifest says so
      (`fallback_encoder_used: true`)
  lrm sid --embeddings=E.npy --out=DIR [--method=rq_kmeans|rq_vae|kmeans|opq] [--levels=3]
          [--codebook_size=256] [--num_codebooks=32 --pca_dim=0 --whiten --opq_iters=0]
          [--data=DATASET_DIR] [--config=FILE --config.sid.FIELD=V]
      DIR/codes.npy, item_ids.npy, table.json, tokenizer/, report.json and manifest.json
      (last). Flags given override the config file's `sid` section. Item ids come from
      `item_ids.npy` beside the embeddings (what `lrm embed` writes) or from --data, whose leaf
      categories also feed the report's coherence numbers. With --method=opq and --data, the
      tokenizer is fitted on the items of the leave-one-out training part only (as `lrm run`
      does) and codes every item; without --data on every item.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import flags
from ml_collections import config_flags

from lrm import data as data_lib
from lrm.core.errors import DataError
from lrm.core.report import print_table
from lrm.data.splits import leave_one_out
from lrm.data.synthetic import WorldConfig, make_world, write_world
from lrm.data.tfds import BUILDERS, build_tfds
from lrm.encoders import byo
from lrm.jobs import defaults, embed as embed_lib, sid as sid_lib
from lrm.sid.quality import format_report


def _base_config(section: str):
  return config_flags.DEFINE_config_file("config", defaults.__file__, f"config file; "
                                         f"its `{section}` section is used", lock_config=True)


def world():
  config = _base_config("world")
  out = flags.DEFINE_string("out", None, "output folder", required=True)

  def main(argv):
    del argv
    made = make_world(WorldConfig.from_dict(config.value.world, where="world"))
    write_world(made, out.value)
    print_table(["synthetic world", out.value],
                [[k, v] for k, v in made.dataset.stats().items() if not isinstance(v, list)])
  return main


def data():
  source = flags.DEFINE_enum("source", "layout", ["layout", "amazon2014", "movielens", "recbole"],
                             "input format")
  path = flags.DEFINE_string("path", None, "input folder (layout, movielens, recbole)")
  reviews = flags.DEFINE_string("reviews", None, "amazon2014: reviews_<Cat>_5.json.gz")
  meta = flags.DEFINE_string("meta", None, "amazon2014: meta_<Cat>.json.gz")
  min_count = flags.DEFINE_integer("min_count", 5, "amazon2014: k of the iterative k-core filter")
  out = flags.DEFINE_string("out", None, "write the dataset here, in --format")
  form = flags.DEFINE_enum("format", "layout", ["layout", "tfds"],
                           "--out holds the standard layout, or TFDS ArrayRecord (a data_dir)")

  def main(argv):
    del argv
    if source.value == "amazon2014":
      if not (reviews.value and meta.value):
        raise flags.ValidationError("--source=amazon2014 needs --reviews and --meta")
      dataset = data_lib.read_amazon_2014(reviews.value, meta.value, min_count=min_count.value)
    else:
      if not path.value:
        raise flags.ValidationError(f"--source={source.value} needs --path")
      reader = {"layout": data_lib.read_dataset, "movielens": data_lib.read_movielens,
                "recbole": data_lib.read_recbole_atomic}[source.value]
      dataset = reader(path.value)
    if out.value and form.value == "tfds":
      if source.value not in BUILDERS:
        raise flags.ValidationError(f"--format=tfds reads --source in {sorted(BUILDERS)}")
      args = ({"reviews": reviews.value, "meta": meta.value, "min_count": min_count.value}
              if source.value == "amazon2014" else {"path": path.value})
      name, _ = build_tfds(out.value, source.value, dataset=dataset, **args)
      print(f"TFDS dataset {name} in {out.value}; train on it with --config.data.source=tfds "
            f"--config.data.tfds={name} --config.data.data_dir={out.value}")
    elif out.value:
      data_lib.write_dataset(out.value, dataset)
    print_table(["dataset", dataset.name], [[k, v] for k, v in dataset.stats().items()])
  return main


def embed():
  data_dir = flags.DEFINE_string("data", None, "dataset folder in the standard layout "
                                 "(sequences.txt + items.jsonl)", required=True)
  out = flags.DEFINE_string("out", None, "output folder", required=True)
  encoder = flags.DEFINE_string("encoder", None, "sentence-encoder folder or name (e.g. "
                                "all-MiniLM-L6-v2, looked up in local caches only); "
                                "default: the hashing fallback")
  fields = flags.DEFINE_list("fields", ["title", "brand", "categories"],
                             "item text fields joined into the text that is encoded")
  modalities = flags.DEFINE_list("modalities", ["text"], "text, npy, cooccurrence (behaviour "
                                 "of the training part) or catalog embedding modalities; "
                                 "several are fused")
  npy = flags.DEFINE_string("npy", None, "bring-your-own embeddings .npy (modality npy)")
  batch = flags.DEFINE_integer("batch_size", 128, "sentences per encoder call")
  fuse = flags.DEFINE_enum("fuse", "concat", ["concat", "projection"], "how modalities fuse")
  fuse_dim = flags.DEFINE_integer("fuse_dim", 0, "projection output dim (0: sum of inputs)")

  def main(argv):
    del argv
    spec = embed_lib.EmbedSpec(encoder=encoder.value, fields=tuple(fields.value),
                               modalities=tuple(modalities.value), npy=npy.value,
                               batch_size=batch.value, fuse=fuse.value, fuse_dim=fuse_dim.value)
    dataset = data_lib.read_dataset(data_dir.value)
    emb, info = embed_lib.embed_catalog(dataset.catalog, spec, sequences=dataset.sequences)
    manifest = embed_lib.write_embeddings(out.value, emb, catalog=dataset.catalog, spec=spec,
                                          info=info, data_dir=data_dir.value)
    enc = manifest["encoder"]
    rows = [["items", manifest["counts"]["items"]], ["dim", manifest["counts"]["dim"]],
            ["encoder", enc.get("name", enc.get("kind"))],
            ["fallback encoder", manifest["fallback_encoder_used"]]]
    if "text" in info["modalities"]:
      rows.append(["items/s (text)", info["modalities"]["text"]["items_per_s"]])
    rows.append(["nn leaf-category agreement", embed_lib.describe_quality(info["quality"])])
    rows.append(["written", f"{out.value}/embeddings.npy"])
    print_table(["embed", ""], rows)
  return main


def sid():
  config = _base_config("sid")
  emb_flag = flags.DEFINE_string("embeddings", None, "float32 [items, d] .npy (e.g. lrm embed's "
                                 "OUT/embeddings.npy)", required=True)
  out = flags.DEFINE_string("out", None, "output folder", required=True)
  data_dir = flags.DEFINE_string("data", None, "dataset folder: item ids and leaf categories")
  given = (  # flags that override the config's `sid` section when set
      flags.DEFINE_enum("method", None, ["rq_kmeans", "rq_vae", "kmeans", "opq"], "tokenizer"),
      flags.DEFINE_integer("levels", None, "semantic levels"),
      flags.DEFINE_integer("codebook_size", None, "codes per level"),
      flags.DEFINE_enum("metric", None, ["l2", "cosine"], "k-means distance"),
      flags.DEFINE_integer("seed", None, "random seed"),
      flags.DEFINE_bool("collision_level", None, "append the collision-breaking level"),
      flags.DEFINE_integer("num_codebooks", None, "opq: codebooks (the SID length)"),
      flags.DEFINE_integer("pca_dim", None, "opq: PCA dims kept (0: the input dim rounded "
                           "down to a multiple of num_codebooks)"),
      flags.DEFINE_bool("whiten", None, "opq: whiten the PCA coordinates"),
      flags.DEFINE_integer("opq_iters", None, "opq: rotation rounds (0: plain PQ)"))

  def main(argv):
    del argv
    overrides = {f.name: f.value for f in given if f.value is not None}
    spec = sid_lib.SIDSpec.from_config({**config.value.sid.to_dict(), **overrides})
    emb_path = pathlib.Path(emb_flag.value)
    x = byo.load_npy_embeddings(emb_path)
    categories = fit_rows = None
    if data_dir.value:
      dataset = data_lib.read_dataset(data_dir.value)
      catalog = dataset.catalog
      if len(catalog) != len(x):
        raise DataError(f"{len(x)} embedding rows for {len(catalog)} catalog items",
                        path=emb_path)
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
    result = sid_lib.fit_sids(x, spec, item_ids=item_ids, categories=categories,
                              fit_rows=fit_rows)
    sid_lib.write_sids(out.value, result, spec, embeddings_path=str(emb_path.resolve()))
    print(format_report(result.report))
    sizes = spec.sizes
    if len(sizes) > 4 and len(set(sizes)) == 1:   # opq's long codes
      sizes = f"{len(sizes)} x {sizes[0]}"
    print_table(["sid", ""], [["method", spec.method], ["codebook sizes", sizes],
                              ["fit seconds", round(result.fit_s, 2)],
                              ["fit items", result.report["fit_items"]],
                              ["unique with collision level",
                               result.report["unique_with_collision_level"]],
                              ["written", f"{out.value}/codes.npy"]])
  return main
