"""The stages every job starts from, each reused when its artifact is complete for the same
config (`config.resume`), so an interrupted run picks up where it stopped and one stage can be
redone alone by deleting its folder:

  run_dir/data/     the dataset in the standard layout (+ the synthetic world's truth)
  run_dir/embed/    embeddings.npy, one row per item (lrm/jobs/embed.py)
  run_dir/sid/      codes.npy, the tokenizer, report.json (lrm/jobs/sid.py)
  run_dir/config.json          the config of the last run (what `lrm evaluate` reads)
  run_dir/results.json         every job's section
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from lrm.core import artifacts
from lrm.core.config import check_known
from lrm.core.errors import ConfigError
from lrm.core.report import print_table
from lrm.data import (read_amazon_2014, read_dataset, read_movielens, read_recbole_atomic,
                      write_dataset)
from lrm.data.splits import leave_one_out
from lrm.data.tfds import load_tfds
from lrm.data.synthetic import WorldConfig, make_world, write_world
from lrm.encoders.resolve import resolve_encoder
from lrm.jobs import defaults, embed as embed_lib, sid as sid_lib
from lrm.sid.quality import format_report

DATA_SOURCES = ("synthetic", "layout", "amazon2014", "movielens", "recbole", "tfds")
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def default_config():
  """Every default of the stages and the retrieval job (lrm/jobs/defaults.py)."""
  return defaults.get_config()


def validate(config) -> None:
  """Checks the config of the stages here before anything runs; errors name the field (a job
  checks its own sections: lrm.jobs.retrieval.validate)."""
  check_known(config.to_dict(), default_config().to_dict())
  if config.data.source not in DATA_SOURCES:
    raise ConfigError("data.source", f"'{config.data.source}' is not one of {DATA_SOURCES}")
  if config.data.source in ("layout", "movielens", "recbole") and not config.data.path:
    raise ConfigError("data.path", f"data.source={config.data.source} needs a folder")
  if config.data.source == "amazon2014" and not (config.data.reviews and config.data.meta):
    raise ConfigError("data.reviews", "amazon2014 needs data.reviews and data.meta files")
  if config.data.source == "tfds" and not (config.data.tfds and config.data.data_dir):
    raise ConfigError("data.tfds", "data.source=tfds needs data.tfds (BUILDER/DATASET, as "
                      "`lrm data --format=tfds` prints) and data.data_dir (its --out)")
  if config.data.tfds and config.data.source != "tfds":
    raise ConfigError("data.source", f"is '{config.data.source}' but data.tfds is set: "
                      f"add --config.data.source=tfds")
  if not config.run_dir:
    raise ConfigError("run_dir", "must be set")
  _embed_spec(config)  # validates the embed section
  _sid_spec(config)


def _sid_spec(config):
  return sid_lib.SIDSpec.from_config(config.sid)


def _embed_spec(config):
  section = config.embed.to_dict()
  if section.get("encoder") in ("auto", "hashing"):
    section["encoder"] = None
  return embed_lib.EmbedSpec.from_config(section)


def resolve_auto_encoder(name: str | None) -> str | None:
  """`auto`: the MiniLM weights when a local cache has them, else the hashing fallback."""
  if not name or name == "hashing":
    return None
  if name != "auto":
    return name
  try:
    return str(resolve_encoder(DEFAULT_ENCODER, field="embed.encoder"))
  except ConfigError as e:
    logging.warning("no local %s weights (%s); using the hashing fallback encoder. "
                    "Run ../shared/tools/get-minilm to use MiniLM.", DEFAULT_ENCODER,
                    str(e).splitlines()[0])
    return None


def data_stage(config, run_dir: pathlib.Path) -> pathlib.Path:
  """Puts the dataset in the standard layout; returns its folder."""
  source = config.data.source
  if source == "layout":
    return pathlib.Path(config.data.path)
  out = run_dir / "data"
  # The manifest's config is what `is_complete` compares when deciding to reuse the folder.
  stage_config = (config.world.to_dict() if source == "synthetic"
                  else {"source": source, **config.data.to_dict()})
  if config.resume and artifacts.is_complete(out, stage_config):
    logging.info("data: reusing %s", out)
    return out
  if source == "synthetic":
    write_world(make_world(WorldConfig.from_dict(config.world, where="world")), out)
    return out
  if source == "amazon2014":
    dataset = read_amazon_2014(config.data.reviews, config.data.meta,
                               min_count=config.data.min_count)
  elif source == "movielens":
    dataset = read_movielens(config.data.path)
  elif source == "tfds":
    dataset = load_tfds(config.data.tfds, config.data.data_dir)
  else:
    dataset = read_recbole_atomic(config.data.path)
  write_dataset(out, dataset, config=stage_config)
  return out


def embed_stage(config, run_dir: pathlib.Path, data_dir: pathlib.Path,
                dataset) -> tuple[np.ndarray, dict]:
  spec = _embed_spec(config)
  spec = dataclasses.replace(spec, encoder=resolve_auto_encoder(config.embed.encoder))
  out = run_dir / "embed"
  inputs = {"data": artifacts.artifact_id(data_dir)}
  if config.resume and embed_lib.is_complete(out, spec, inputs):
    logging.info("embed: reusing %s", out)
    return (embed_lib.read_embeddings(out, num_items=len(dataset.catalog)),
            artifacts.read_manifest(out))
  emb, info = embed_lib.embed_catalog(dataset.catalog, spec, sequences=dataset.sequences)
  manifest = embed_lib.write_embeddings(out, emb, catalog=dataset.catalog, spec=spec, info=info,
                                        data_dir=str(data_dir), inputs=inputs)
  return emb, manifest


def sid_stage(config, run_dir: pathlib.Path, dataset, embeddings: np.ndarray) -> dict:
  """Fits the SID tokenizer on the embeddings; returns the quality report.

  `opq` fits on the items of the leave-one-out training part only (as RPG) and codes every item.
  """
  spec = _sid_spec(config)
  out = run_dir / "sid"
  inputs = {"embed": artifacts.artifact_id(run_dir / "embed")}
  if config.resume and sid_lib.is_complete(out, spec, inputs):
    logging.info("sid: reusing %s", out)
    return json.loads((out / "report.json").read_text())
  categories = (dataset.catalog.leaf_category("categories")
                if "categories" in dataset.catalog.fields else None)
  fit_rows = None
  if spec.method == "opq":
    train_items = np.unique(leave_one_out(dataset.sequences).train.items)
    fit_rows = dataset.catalog.rows(train_items)
  result = sid_lib.fit_sids(embeddings, spec, item_ids=dataset.catalog.item_ids,
                            categories=categories, fit_rows=fit_rows)
  sid_lib.write_sids(out, result, spec,
                     embeddings_path=str(run_dir / "embed" / "embeddings.npy"), inputs=inputs)
  return result.report


def prepare_stages(config) -> tuple[pathlib.Path, Any, dict[str, Any]]:
  """Data, embeddings and SIDs (each reused when complete); returns (run_dir, dataset, results)."""
  validate(config)
  run_dir = pathlib.Path(config.run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    artifacts.atomic_write_json(run_dir / "config.json", config.to_dict())
  start = time.perf_counter()

  data_dir = data_stage(config, run_dir)
  dataset = read_dataset(data_dir)
  stats = dataset.stats()
  print_table(["dataset", dataset.name], [[k, v] for k, v in stats.items()
                                           if not isinstance(v, list)])

  emb, manifest = embed_stage(config, run_dir, data_dir, dataset)
  # How well each input and the fused output recover the leaf category (the planted topic).
  info = manifest["embedding_info"]
  quality = {name: m.get("quality") for name, m in info["modalities"].items()}
  quality["embeddings.npy"] = info.get("quality")
  rows = [[name, q["nn_label_agreement"], q["chance"]] for name, q in quality.items() if q]
  text_info = info["modalities"].get("text", {})
  encoder = manifest.get("encoder", {})
  if rows:
    print_table(["embeddings (nn shares leaf category)", "agreement", "chance"], rows)
  sid_report = sid_stage(config, run_dir, dataset, emb)
  print(format_report(sid_report))
  results = {
      "config": config.to_dict(),
      "dataset": stats,
      "embed": {"encoder": encoder, "dim": int(emb.shape[1]),
                "fallback_encoder_used": manifest.get("fallback_encoder_used"),
                "items_per_s": text_info.get("items_per_s"), "nn_leaf_category": quality},
      "sid": {"method": sid_report["method"], "codebook_sizes": sid_report["codebook_sizes"],
              "fit_s": sid_report.get("fit_s"), **sid_lib.summary(sid_report)},
      "wall_s": round(time.perf_counter() - start, 3),
  }
  return run_dir, dataset, results


def layout_dir(config, run_dir: pathlib.Path) -> pathlib.Path:
  """Where the data stage left the standard layout (the given folder for `layout` data)."""
  return pathlib.Path(config.data.path) if config.data.source == "layout" else run_dir / "data"


def write_results(run_dir: pathlib.Path, update: dict[str, Any]) -> dict[str, Any]:
  """Merges `update` into run_dir/results.json (sections from other commands are kept)."""
  path = run_dir / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  results.update(update)
  artifacts.atomic_write_json(path, results)
  print(f"results: {path}")
  return results
