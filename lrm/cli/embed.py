"""lrm embed --data=DIR [--encoder=PATH_OR_NAME] --out=OUT

Writes OUT/embeddings.npy (float32, one row per item in catalog order), OUT/item_ids.npy and
OUT/manifest.json. Without --encoder the dependency-free hashing encoder is used, and the
manifest says so (`fallback_encoder_used: true`).
"""

from __future__ import annotations

from absl import flags

from lrm.core.report import print_table
from lrm.data import read_dataset
from lrm.encoders import stage

_DATA = flags.DEFINE_string("data", None, "dataset folder in the standard layout "
                            "(sequences.txt + items.jsonl)", required=True)
_OUT = flags.DEFINE_string("out", None, "output folder", required=True)
_ENCODER = flags.DEFINE_string("encoder", None, "sentence-encoder folder or name (e.g. "
                               "all-MiniLM-L6-v2, looked up in local caches only); "
                               "default: the hashing fallback")
_FIELDS = flags.DEFINE_list("fields", ["title", "brand", "categories"],
                            "item text fields joined into the text that is encoded")
_MODALITIES = flags.DEFINE_list("modalities", ["text"], "text, npy, or catalog embedding "
                                "modalities; several are fused")
_NPY = flags.DEFINE_string("npy", None, "bring-your-own embeddings .npy (modality npy)")
_BATCH = flags.DEFINE_integer("batch_size", 128, "sentences per encoder call")
_FUSE = flags.DEFINE_enum("fuse", "concat", ["concat", "projection"], "how modalities fuse")
_FUSE_DIM = flags.DEFINE_integer("fuse_dim", 0, "projection output dim (0: sum of inputs)")


def main(argv):
  del argv

  spec = stage.EmbedSpec(encoder=_ENCODER.value, fields=tuple(_FIELDS.value),
                         modalities=tuple(_MODALITIES.value), npy=_NPY.value,
                         batch_size=_BATCH.value, fuse=_FUSE.value, fuse_dim=_FUSE_DIM.value)
  dataset = read_dataset(_DATA.value)
  emb, info = stage.embed_catalog(dataset.catalog, spec)
  manifest = stage.write_embeddings(_OUT.value, emb, catalog=dataset.catalog, spec=spec,
                                    info=info, data_dir=_DATA.value)
  enc = manifest["encoder"]
  rows = [["items", manifest["counts"]["items"]], ["dim", manifest["counts"]["dim"]],
          ["encoder", enc.get("name", enc.get("kind"))],
          ["fallback encoder", manifest["fallback_encoder_used"]]]
  if "text" in info["modalities"]:
    rows.append(["items/s (text)", info["modalities"]["text"]["items_per_s"]])
  rows.append(["nn leaf-category agreement", stage.describe_quality(info["quality"])])
  rows.append(["written", f"{_OUT.value}/embeddings.npy"])
  print_table(["embed", ""], rows)
