"""Finds a sentence encoder's folder from a path or a model name, without the network.

A name (`all-MiniLM-L6-v2` or `sentence-transformers/all-MiniLM-L6-v2`) is looked up, in order:
  1. `$LRM_MODELS/<name>`, then `${XDG_CACHE_HOME:-~/.cache}/lrm/<name>` (what
     ../shared/tools/get-minilm fills);
  2. the Hugging Face hub cache (`$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`,
     `${XDG_CACHE_HOME:-~/.cache}/huggingface/hub`): `models--<org>--<name>/snapshots/<rev>/`,
     the revision in `refs/main` first;
  3. the sentence-transformers cache (`$SENTENCE_TRANSFORMERS_HOME`,
     `${TORCH_HOME:-~/.cache/torch}/sentence_transformers`): `<org>_<name>/`.
A bare name also tries the `sentence-transformers` organisation, as sentence-transformers does.
"""

from __future__ import annotations

import os
import pathlib

from lrm.core.errors import ConfigError

# Files a folder needs to be loadable by SentenceEncoder.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
DEFAULT_ORG = "sentence-transformers"


def missing_files(directory: pathlib.Path) -> list[str]:
  return [f for f in REQUIRED_FILES if not (directory / f).is_file()]


def _cache_home() -> pathlib.Path:
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")


def _split_name(name: str) -> tuple[str | None, str]:
  name = name.strip().strip("/")
  if "/" in name:
    org, base = name.split("/", 1)
    return org, base
  return None, name


def hub_cache_dirs() -> list[pathlib.Path]:
  """Hugging Face hub caches in the order huggingface_hub itself would pick them."""
  dirs = []
  for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    if os.environ.get(var):
      dirs.append(pathlib.Path(os.environ[var]))
  if os.environ.get("HF_HOME"):
    dirs.append(pathlib.Path(os.environ["HF_HOME"]) / "hub")
  dirs.append(_cache_home() / "huggingface" / "hub")
  return _unique(dirs)


def sentence_transformers_dirs() -> list[pathlib.Path]:
  dirs = []
  if os.environ.get("SENTENCE_TRANSFORMERS_HOME"):
    dirs.append(pathlib.Path(os.environ["SENTENCE_TRANSFORMERS_HOME"]))
  torch_home = pathlib.Path(os.environ.get("TORCH_HOME") or _cache_home() / "torch")
  dirs.append(torch_home / "sentence_transformers")
  return _unique(dirs)


def _unique(paths: list[pathlib.Path]) -> list[pathlib.Path]:
  seen, out = set(), []
  for p in paths:
    p = p.expanduser()
    if p not in seen:
      seen.add(p)
      out.append(p)
  return out


def _hub_snapshots(repo_dir: pathlib.Path) -> list[pathlib.Path]:
  """Snapshots of one cached hub repo: the `refs/main` revision first, then newest first."""
  snapshots = repo_dir / "snapshots"
  if not snapshots.is_dir():
    return [snapshots]
  found = sorted((p for p in snapshots.iterdir() if p.is_dir()),
                 key=lambda p: p.stat().st_mtime, reverse=True)
  main_ref = repo_dir / "refs" / "main"
  if main_ref.is_file():
    main = snapshots / main_ref.read_text().strip()
    found = [main] + [p for p in found if p != main]
  return found or [snapshots]


def candidate_dirs(name: str) -> list[pathlib.Path]:
  """Every folder `name` may live in, in lookup order (existing or not)."""
  org, base = _split_name(name)
  orgs = [org] if org else [DEFAULT_ORG]
  full_names = [f"{o}/{base}" for o in orgs]
  out: list[pathlib.Path] = []
  lrm_roots = []
  if os.environ.get("LRM_MODELS"):
    lrm_roots.append(pathlib.Path(os.environ["LRM_MODELS"]))
  lrm_roots.append(_cache_home() / "lrm")
  for root in lrm_roots:
    out.append(root / base)
    out.extend(root / full for full in full_names)
  for root in hub_cache_dirs():
    for full in full_names:
      out.extend(_hub_snapshots(root / ("models--" + full.replace("/", "--"))))
  for root in sentence_transformers_dirs():
    out.extend(root / full.replace("/", "_") for full in full_names)
    out.append(root / base)
  return _unique(out)


def resolve_encoder(name_or_path: str | os.PathLike, *, field: str = "encoder") -> pathlib.Path:
  """The folder of a sentence encoder given its path or name; never downloads.

  Raises ConfigError (naming `field`) listing every place looked, and for folders that exist
  but lack files, which ones.
  """
  text = os.fspath(name_or_path)
  if not text.strip():
    raise ConfigError(field, "empty encoder name")
  as_path = pathlib.Path(text).expanduser()
  if as_path.is_dir():
    missing = missing_files(as_path)
    if missing:
      raise ConfigError(field, f"folder {as_path} lacks {missing} (needs {list(REQUIRED_FILES)}"
                        ": a Hugging Face model folder with safetensors weights)")
    return as_path
  if as_path.exists():
    raise ConfigError(field, f"{as_path} is a file; an encoder is a folder")
  # `org/name` has one slash; anything else with a path's shape is a path that is not there.
  if text.startswith((".", "/", "~")) or text.count("/") > 1:
    raise ConfigError(field, f"no such folder: {as_path}")
  looked = []
  for candidate in candidate_dirs(text):
    if not candidate.is_dir():
      looked.append(f"{candidate} (absent)")
      continue
    missing = missing_files(candidate)
    if not missing:
      return candidate
    looked.append(f"{candidate} (lacks {', '.join(missing)})")
  raise ConfigError(
      field, f"sentence encoder '{text}' not found (nothing is downloaded). Looked in:\n  "
      + "\n  ".join(looked)
      + "\nPut the model folder (config.json, model.safetensors, tokenizer.json) in one of "
      "these, set $LRM_MODELS, or pass its path; ../shared/tools/get-minilm fetches "
      "all-MiniLM-L6-v2.")
