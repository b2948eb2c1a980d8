"""Constrained decoding beside STATIC: trie masking per decoding step and users/s, same codes.

STATIC (youtube/static-constraint-decoding, Apache-2.0, JAX) is not on PyPI and is never an lrm
dependency: pass the root of a checkout of its public repository with --static. Without it,
lrm's half runs alone and the record says STATIC was skipped.

Both sides get the same codes, batch x beam, stand-in model and process:

  catalogs  Beauty's SIDs (an `lrm sid` folder, --beauty-sids) and a synthetic catalog of
            --zipf-items items (first level Zipf(s=1) over 256 codes, as coarse RQ clusters are
            skewed, residual levels uniform), both with TIGER's collision level; full codes
  model     one function of the previous code: tanh(E[prev + 1]) @ W, log-softmax over
            V = the largest codebook (STATIC's single vocabulary), so the model cost is equal
  search    --batch users x --beam beams (256 x 20), jitted, warm; STATIC's own
            `sparse_transition_jax` (two dense levels, tokens_per_beam = beam, which keeps
            its search exact) against lrm's `beam_search` on `SIDTrie.arrays()`

Per catalog and decoding step c, the masking time: from the step's log-probs and the beams'
trie states to the masked candidates the beam update reads, on the trie states of random
catalog items, median of --repeats warm calls. Step 0 reads the b users' rows (both searches
start there before the beams split); later steps b * B rows. lrm: the root's row at c=0,
`valid_next` + where at dense levels ([b*B, k_c]), `csr_candidates` at CSR levels ([b*B,
max_children]); STATIC: its start mask at c=0, its dense V x V mask (+ top-k and state lookup)
at c=1, its CSR gather of max-branch candidates beyond. Candidate sets are checked equal
between the two at every CSR step.
Full search: best of --repeats warm runs, users/s, every decoded item valid, and the share of
each user's beams both searches return.

  lrm embed --data=../shared/data/amazon_beauty --encoder=all-MiniLM-L6-v2 --out=runs/beauty/embed
  lrm sid --embeddings=runs/beauty/embed/embeddings.npy --data=../shared/data/amazon_beauty \
      --method=rq_kmeans --levels=3 --codebook_size=256 --out=runs/beauty/sid   # TIGER's SIDs
  python benchmarks/decode_static.py --static=/path/to/static-constraint-decoding \
      --beauty-sids=runs/beauty/sid
"""

from __future__ import annotations

import logging
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrm.core import artifacts  # noqa: E402
from lrm.decode import beam_search  # noqa: E402
from lrm.decode.beam import csr_candidates  # noqa: E402
from lrm.sid.table import SIDTable, with_collision_level  # noqa: E402
from lrm.sid.trie import contains, trie_from_table, valid_next  # noqa: E402

_STATIC = flags.DEFINE_string("static", None, "root of a checkout of "
                              "github.com/youtube/static-constraint-decoding (absent: lrm only)")
_BEAUTY_SIDS = flags.DEFINE_string("beauty-sids", None, "an `lrm sid` output folder with "
                                   "Beauty's SIDs (absent: the Beauty catalog is skipped)")
_ZIPF_ITEMS = flags.DEFINE_integer("zipf-items", 1_000_000, "items of the Zipf catalog (0: none)")
_CODEBOOK = flags.DEFINE_integer("codebook", 256, "Zipf catalog: codes per level")
_LEVELS = flags.DEFINE_integer("levels", 3, "Zipf catalog: levels before the collision level")
_BATCH = flags.DEFINE_integer("batch", 256, "users per search")
_BEAM = flags.DEFINE_integer("beam", 20, "beam width")
_MODEL_DIM = flags.DEFINE_integer("model-dim", 128, "stand-in model width")
_REPEATS = flags.DEFINE_integer("repeats", 20, "warm timed calls per measurement")
_SEED = flags.DEFINE_integer("seed", 0, "seed")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def zipf_table(n: int, k: int, levels: int, seed: int) -> SIDTable:
  """n items: level 0 drawn Zipf(s=1) over k codes, deeper levels uniform; collision level."""
  rng = np.random.default_rng(seed)
  p = 1.0 / np.arange(1, k + 1)
  first = rng.permutation(k)[rng.choice(k, n, p=p / p.sum())]
  rest = rng.integers(0, k, size=(n, levels - 1))
  codes = np.concatenate([first[:, None], rest], axis=1).astype(np.int32)
  return with_collision_level(SIDTable(item_ids=np.arange(n), codes=codes,
                                       codebook_sizes=(k,) * levels))


class StandInModel:
  """log-probs over V codes from the previous code alone; STATIC's model interface too.

  Hashable by identity, so STATIC's jit takes it as a static argument.
  """

  def __init__(self, vocab: int, dim: int, seed: int):
    k1, k2 = jax.random.split(jax.random.key(seed))
    self.embed = jax.random.normal(k1, (vocab + 1, dim))
    self.head = jax.random.normal(k2, (dim, vocab)) / np.sqrt(dim)

  def log_probs(self, prev: jax.Array, offset: jax.Array | float = 0.0) -> jax.Array:
    """prev: int [n], -1 before the first code; offset: [n, 1] or a scalar. Returns [n, V]."""
    return jax.nn.log_softmax(jnp.tanh(self.embed[prev + 1] + offset) @ self.head, axis=-1)

  def __call__(self, input_ids, key):
    """STATIC's interface: (input_ids [n, 1], key) -> (logits [n, 1, V], key)."""
    return self.log_probs(input_ids[:, 0])[:, None, :], key


def prefix_nodes(sorted_codes: np.ndarray) -> list[np.ndarray]:
  """Per prefix length c (0..L-1), each sorted row's node id among the length-c prefixes.

  Both tries number a depth's nodes in sorted order of their prefixes, so this maps a row to
  lrm's node and, shifted by an offset, to STATIC's state.
  """
  n, L = sorted_codes.shape
  change = np.ones((n, L), bool)
  change[1:] = np.logical_or.accumulate(sorted_codes[1:] != sorted_codes[:-1], axis=1)
  return [np.zeros(n, np.int64)] + [np.cumsum(change[:, c - 1]) - 1 for c in range(1, L)]


def valid_codes(read: tuple, k: int) -> np.ndarray:
  """bool [n, k]: the codes a masking step left open, from either form `mask_fn` returns."""
  if len(read) == 2:                       # masked log-probs [n, k], next nodes
    return np.asarray(read[0]) > -np.inf
  codes, _, logp = (np.asarray(x) for x in read)
  out = np.zeros((len(codes), k + 1), bool)
  np.put_along_axis(out, np.where(np.isfinite(logp), codes, k), True, axis=1)
  return out[:, :k]


def time_calls(fn, *args, repeats: int) -> list[float]:
  jax.block_until_ready(fn(*args))     # compile
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    out.append(time.perf_counter() - t0)
  return out


def load_static(path: str):
  root = pathlib.Path(path).resolve()
  if not (root / "static_decoding" / "decoding_jax.py").exists():
    raise app.UsageError(f"--static={path}: no static_decoding/decoding_jax.py there")
  sys.path.insert(0, str(root))
  from static_decoding import csr_utils, decoding_jax   # noqa: PLC0415  (optional checkout)
  return csr_utils, decoding_jax


def run_catalog(name: str, table: SIDTable, static) -> dict:
  b, B, R = _BATCH.value, _BEAM.value, _REPEATS.value
  codes = table.full_codes
  sizes = tuple(table.full_codebook_sizes)
  L, V = len(sizes), max(sizes)
  order = np.lexsort(codes.T[::-1])
  sorted_codes = codes[order].astype(np.int32)
  t0 = time.perf_counter()
  trie = trie_from_table(table)
  arrays = trie.arrays()
  lrm_build_s = time.perf_counter() - t0
  model = StandInModel(V, _MODEL_DIM.value, _SEED.value)
  rng = np.random.default_rng(_SEED.value)
  rows = rng.integers(0, len(sorted_codes), b * B)
  nodes = prefix_nodes(sorted_codes)
  logp = jax.random.normal(jax.random.key(_SEED.value + 1), (b * B, V))
  out = {"catalog": name, "items": len(codes), "codebook_sizes": list(sizes),
         "lrm": {"build_s": lrm_build_s, "dense_levels": trie.dense_levels,
                 "trie_bytes": trie.nbytes(), "mask_ms": []}}

  lrm_masks = []
  for c in range(L):
    node = jnp.asarray(nodes[c][rows], jnp.int32)
    def mask_fn(lp, nd, trie_arrays, c=c):
      """What beam_search reads at step c: a masked [b*B, k] row per beam, or at a CSR level
      each beam's children only ([b*B, max_children] codes, nodes, log-probs)."""
      if c > 0 and c >= trie_arrays.dense_levels:
        return csr_candidates(trie_arrays, c, nd, lp[:, :sizes[c]])
      if c == 0:   # the root's one row masks each user's first step (b rows, not b * B)
        mask, nxt = valid_next(trie_arrays, 0, nd[:1])
        return jnp.where(mask, lp[:b, :sizes[0]], -jnp.inf), nxt
      mask, nxt = valid_next(trie_arrays, c, nd)
      return jnp.where(mask, lp[:, :sizes[c]], -jnp.inf), nxt
    # The index is an argument, not a closure constant, as in the searches below.
    mask_fn = jax.jit(mask_fn)
    out["lrm"]["mask_ms"].append(1e3 * float(np.median(time_calls(mask_fn, logp, node, arrays,
                                                                   repeats=R))))
    lrm_masks.append(valid_codes(mask_fn(logp, node, arrays), sizes[c]) if c else None)

  # lrm's search carries a per-beam state; a zero one keeps XLA from constant-folding the first
  # step (all beams start from the same empty prefix), as a real model's user state would.
  step = lambda state, prev, level: (model.log_probs(prev, state)[:, :sizes[level]], state)
  dummy = jnp.zeros((b, 1))
  search = lambda: beam_search(step, dummy, arrays, batch_size=b, beam_size=B, num_levels=L,
                               codebook_sizes=sizes, top_k=B)
  lrm_codes = np.asarray(search().codes)
  valid = contains(trie, lrm_codes.reshape(-1, L))
  out["lrm"]["valid_rate"] = float(valid.mean())
  if static is None:
    best = min(time_calls(search, repeats=R))
    out["lrm"].update(search_s=best, users_per_s=b / best)
    out["static"] = "skipped: no --static checkout"
    print(f"{name}: lrm search {best * 1e3:.1f} ms = {b / best:,.0f} users/s", flush=True)
    return out

  csr_utils, dj = static
  t0 = time.perf_counter()
  packed, indptr, branches, start_mask, dense_mask, dense_states = (
      csr_utils.build_static_index(sorted_codes, V, dense_lookup_layers=2))
  static_build_s = time.perf_counter() - t0
  packed, indptr = jnp.asarray(packed), jnp.asarray(indptr)
  start_mask, dense_mask = jnp.asarray(start_mask), jnp.asarray(dense_mask)
  dense_states = jnp.asarray(dense_states)
  offsets = np.cumsum([0, V + 1] + [trie.num_nodes[c] for c in range(2, L)])
  out["static"] = {"build_s": static_build_s, "layer_max_branches": [int(x) for x in branches],
                   "index_bytes": int(packed.nbytes + indptr.nbytes + dense_mask.nbytes
                                      + dense_states.nbytes), "mask_ms": []}
  for c in range(L):
    if c == 0:   # STATIC's first step reads the b users' rows too
      fn = jax.jit(lambda lp, start: (jnp.where(start, lp[:b], -jnp.inf),))
      args = (logp, start_mask)
    elif c == 1:
      def fn(lp, parent, mask, states):
        lp = jnp.where(mask[parent], lp, -jnp.inf)
        top, tok = jax.lax.top_k(lp, B)
        return top, tok, states[parent[:, None], tok]
      fn = jax.jit(fn)
      args = (logp, jnp.asarray(sorted_codes[rows, 0], jnp.int32), dense_mask, dense_states)
    else:
      state = jnp.asarray(offsets[c - 1] + nodes[c][rows], jnp.int32)
      fn = jax.jit(lambda lp, st, csr, ptr, c=c: dj.generate_and_apply_logprobs_mask(
          lp, st, csr, ptr, int(branches[c]), V))
      args = (logp, state, packed, indptr)
    out["static"]["mask_ms"].append(1e3 * float(np.median(time_calls(fn, *args, repeats=R))))
    if c >= 2:   # the CSR levels: STATIC's candidate set must equal lrm's mask
      cand_lp, cand_tok, _ = fn(*args)
      got = valid_codes((cand_tok, None, cand_lp), V)
      if not (got[:, :sizes[c]] == lrm_masks[c]).all():
        raise AssertionError(f"{name}: STATIC and lrm disagree on the valid codes at step {c}")

  static_search = lambda key: dj.sparse_transition_jax(
      model, key, b, B, B, -1, L, V, tuple(int(x) for x in branches), packed, indptr,
      start_mask, dense_mask, dense_states, d_dense=2)
  static_codes = np.asarray(static_search(jax.random.key(0)))
  valid = contains(trie, static_codes.reshape(-1, L))
  same = [len({tuple(x) for x in lrm_codes[u]} & {tuple(x) for x in static_codes[u]}) / B
          for u in range(b)]
  out["static"]["valid_rate"] = float(valid.mean())
  out["beams_in_common"] = float(np.mean(same))
  # Alternating calls, best of each: the two searches see the same machine (this VM's speed
  # drifts over a run by more than their difference).
  best = {"lrm": np.inf, "static": np.inf}
  key = jax.random.key(0)
  for _ in range(R):
    for side, fn in (("lrm", search), ("static", lambda: static_search(key))):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      best[side] = min(best[side], time.perf_counter() - t0)
  for side in best:
    out[side].update(search_s=best[side], users_per_s=b / best[side])
    print(f"{name}: {side:<6} mask ms/step {np.round(out[side]['mask_ms'], 3).tolist()}  "
          f"search {best[side] * 1e3:.1f} ms = {b / best[side]:,.0f} users/s", flush=True)
  print(f"{name}: beams in common {out['beams_in_common']:.3f}", flush=True)
  return out


def print_table(catalogs: list[dict]) -> None:
  print(f"\n{'catalog':<14}{'side':<8}{'mask ms per step':<34}{'users/s':>10}{'valid':>7}")
  for cat in catalogs:
    for side in ("lrm", "static"):
      s = cat[side]
      if isinstance(s, str):
        print(f"{cat['catalog']:<14}{side:<8}{s}")
        continue
      steps = " ".join(f"{m:.2f}" for m in s["mask_ms"])
      print(f"{cat['catalog']:<14}{side:<8}{steps:<34}{s['users_per_s']:>10,.0f}"
            f"{s['valid_rate']:>7.2f}")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)   # no-TPU INFO line
  static = load_static(_STATIC.value) if _STATIC.value else None
  if static is None:
    print("--static not given: STATIC's half is skipped", flush=True)
  t_start = time.perf_counter()
  catalogs = []
  if _BEAUTY_SIDS.value:
    catalogs.append(run_catalog("beauty", SIDTable.load(_BEAUTY_SIDS.value), static))
  else:
    print("--beauty-sids not given: the Beauty catalog is skipped", flush=True)
  if _ZIPF_ITEMS.value:
    table = zipf_table(_ZIPF_ITEMS.value, _CODEBOOK.value, _LEVELS.value, _SEED.value)
    catalogs.append(run_catalog(f"zipf_{_ZIPF_ITEMS.value}", table, static))
  if not catalogs:
    raise app.UsageError("no catalog: give --beauty-sids or --zipf-items > 0")
  print_table(catalogs)
  slug = artifacts.device_description()[1]
  record = artifacts.benchmark_record(
      "decode_static",
      dataset=", ".join(c["catalog"] for c in catalogs),
      model=f"stand-in: tanh(E[prev + 1]) @ W (d={_MODEL_DIM.value}), log-softmax over V",
      metrics={"batch": _BATCH.value, "beam": _BEAM.value, "repeats": _REPEATS.value,
               "static_checkout": _STATIC.value, "catalogs": catalogs},
      wall_s=time.perf_counter() - t_start, seed=_SEED.value)
  artifacts.write_benchmark_result(pathlib.Path(_OUT.value), f"decode_static_{slug}", record)


if __name__ == "__main__":
  app.run(main)
