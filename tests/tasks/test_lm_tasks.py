import collections

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.types import Catalog, Sequences
from lrm.sid.table import SIDTable, with_collision_level
from lrm.tasks import lm_tasks as T
from lrm.tokens.joint_vocab import FIELDS, TASKS, field_text, make_joint_vocab

# Items 1..8 appear in training; 101..106 only as the last two events of a user, i.e. as
# leave-one-out's validation and test targets, so any leak shows up as their SIDs.
TRAIN_ITEMS = list(range(1, 9))
HELD = list(range(101, 107))


@pytest.fixture(scope="module")
def world():
  ids = TRAIN_ITEMS + HELD
  n = len(ids)
  catalog = Catalog(item_ids=np.array(ids), fields={
      "title": [f"Item {i} crème 😀" for i in ids],
      "brand": [None if i % 3 == 0 else f"Brand{i % 2}" for i in ids],
      "categories": [["Makeup", "Lips"] if i % 2 else [] for i in ids]})
  codes = np.stack([np.arange(n) % 4, np.arange(n) // 4 % 4], axis=1)
  table = with_collision_level(SIDTable(item_ids=catalog.item_ids, codes=codes,
                                        codebook_sizes=(4, 4)))
  vocab = make_joint_vocab(catalog, table.full_codebook_sizes, bpe_vocab_size=300,
                           bpe_min_frequency=1, num_sentinels=4)
  seqs = Sequences.from_lists([1, 2, 3], [[1, 2, 3, 4, 5, 101, 102], [6, 7, 8, 1, 103, 104],
                                          [2, 4, 6, 8, 3, 105, 106]])
  return catalog, table, vocab, leave_one_out(seqs)


def _sid(table, vocab, item_id):
  return tuple(vocab.sid_tokens(table.full_codes[table.row_of([item_id])[0]]).tolist())


def _single_row(examples, i, length=128):
  rows, _ = T.pack(examples.take([i]), row_length=length)
  return {k: v[0] for k, v in rows.items()}


def _check_loss_is_completion(examples, i, eos):
  """The scored targets are exactly the completion (eos included), in order."""
  row = _single_row(examples, i)
  tokens = examples.example(i)
  completion = tokens[examples.num_prompt[i]:]
  scored = row["targets"][row["loss_mask"] > 0]
  np.testing.assert_array_equal(scored, completion)
  assert scored[-1] == eos
  # Positions scored: those whose next token is generated; the last token is never scored.
  n = len(tokens)
  expected = np.zeros(128, np.float32)
  expected[examples.num_prompt[i] - 1:n - 1] = 1
  np.testing.assert_array_equal(row["loss_mask"], expected)


@pytest.fixture(scope="module")
def examples(world):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(max_history=4, mask_fraction=0.5)
  return T.build_examples(catalog, table, vocab, split, cfg)


def test_sid2text(world, examples):
  catalog, table, vocab, _ = world
  ex = examples["sid2text"]
  assert len(ex) == len(catalog)
  first = vocab.decode(ex.example(0))
  assert first[:4] == ["<bos>", "<task:sid2text>", tuple(table.full_codes[0].tolist()), "<sep>"]
  assert first[4:] == ["<field:title>", "Item 1 crème 😀", "<field:brand>", "Brand1",
                       "<field:categories>", "Makeup > Lips", "<eos>"]
  # Item 6: no brand, no categories -> only the title.
  assert vocab.decode(ex.example(5))[4:] == ["<field:title>", "Item 6 crème 😀", "<eos>"]
  assert not ex.bidirectional.any()
  for i in range(len(ex)):
    _check_loss_is_completion(ex, i, vocab.eos)


def test_text2sid(world, examples):
  catalog, table, vocab, _ = world
  ex = examples["text2sid"]
  # One example per present field: titles (all), brands (not i % 3 == 0), categories (odd ids).
  ids = catalog.item_ids
  expected = len(ids) + int((ids % 3 != 0).sum()) + int((ids % 2 == 1).sum())
  assert len(ex) == expected
  assert vocab.decode(ex.example(0)) == ["<bos>", "<task:text2sid>", "<field:title>",
                                        "Item 1 crème 😀", "<sep>",
                                        tuple(table.full_codes[0].tolist()), "<eos>"]
  assert vocab.decode(ex.example(1))[2:4] == ["<field:brand>", "Brand1"]
  for i in range(len(ex)):
    _check_loss_is_completion(ex, i, vocab.eos)
    assert len(ex.example(i)) - ex.num_prompt[i] == vocab.num_levels + 1


def test_next_item_uses_the_training_part_only(world, examples):
  catalog, table, vocab, split = world
  ex = examples["next"]
  assert len(ex) == int((split.train.lengths - 1).sum()) == 4 + 3 + 4
  held_sids = {_sid(table, vocab, i) for i in HELD}
  L = vocab.num_levels
  for i in range(len(ex)):
    tokens = ex.example(i).tolist()
    windows = {tuple(tokens[j:j + L]) for j in range(len(tokens) - L + 1)}
    assert not windows & held_sids
    _check_loss_is_completion(ex, i, vocab.eos)
  # User 1's last training example: history 1..4 truncated to max_history=4 -> [1, 2, 3, 4] -> 5.
  last = vocab.decode(ex.example(3))
  codes = lambda i: tuple(table.full_codes[table.row_of([i])[0]].tolist())
  assert last == ["<bos>", "<task:next>", codes(1), codes(2), codes(3), codes(4), "<sep>",
                  codes(5), "<eos>"]


def test_next_item_prompt_budget_keeps_the_most_recent(world):
  catalog, table, vocab, split = world
  L = vocab.num_levels
  cfg = T.LMTaskConfig(weights={"next": 1.0}, max_history=10, max_prompt_tokens=3 + 2 * L,
                       history_titles=False)
  ex = T.build_examples(catalog, table, vocab, split, cfg)["next"]
  codes = lambda i: tuple(table.full_codes[table.row_of([i])[0]].tolist())
  assert vocab.decode(ex.example(3)) == ["<bos>", "<task:next>", codes(3), codes(4), "<sep>",
                                         codes(5), "<eos>"]
  assert (ex.num_prompt <= 3 + 2 * L).all()
  with_titles = T.LMTaskConfig(weights={"next": 1.0}, history_titles=True,
                               history_title_tokens=2)
  ex = T.build_examples(catalog, table, vocab, split, with_titles)["next"]
  seg = vocab.decode(ex.example(0))
  assert seg[2] == codes(1) and seg[3] == "<field:title>" and isinstance(seg[4], str)
  assert len(vocab.encode_text(seg[4])) == 2


def test_masked_items(world, examples):
  catalog, table, vocab, split = world
  ex = examples["masked"]
  L = vocab.num_levels
  codes_of_item = {i: tuple(table.full_codes[r].tolist()) for r, i in enumerate(catalog.item_ids)}
  sentinels = {vocab.sentinel(j): j for j in range(vocab.num_sentinels)}
  assert ex.bidirectional.all() and len(ex) >= len(split.train)
  windows = T._windows(split.train, 4)
  rows = catalog.rows(split.train.items)
  for i in range(len(ex)):
    tokens = ex.example(i)
    p = ex.num_prompt[i]
    prompt, completion = tokens[:p], tokens[p:]
    # Rebuild the window: unmasked items as they are, sentinels spelled out by the targets.
    assert completion[-1] == vocab.eos
    answers = {}
    k = 0
    while k < len(completion) - 1:
      j = sentinels[int(completion[k])]
      assert j == len(answers)                        # sentinels in order, 0, 1, ...
      answers[j] = tuple(vocab.codes_of(completion[k + 1:k + 1 + L]).tolist())
      k += 1 + L
    restored, masked, k = [], 0, 2
    while prompt[k] != vocab.sep:
      if int(prompt[k]) in sentinels:
        assert sentinels[int(prompt[k])] == masked
        restored.append(answers[masked])
        masked += 1
        k += 1
      else:
        restored.append(tuple(vocab.codes_of(prompt[k:k + L]).tolist()))
        k += L
    assert masked == len(answers) >= 1 and masked < len(restored)   # whole SIDs, not all
    start, end = windows[i]
    assert restored == [codes_of_item[int(catalog.item_ids[r])] for r in rows[start:end]]
    _check_loss_is_completion(ex, i, vocab.eos)
    row = _single_row(ex, i)
    np.testing.assert_array_equal(row["prefix"][:len(tokens)], np.arange(len(tokens)) < p)


def _random_examples(rng, m, max_len):
  lens = rng.integers(2, max_len + 1, m)
  prompts = [rng.integers(1, 50, n - 1 - rng.integers(0, n - 1)).astype(np.int32) for n in lens]
  completions = [rng.integers(1, 50, n - len(pr)).astype(np.int32) for pr, n in zip(prompts, lens)]
  parts = [T._from_pieces(prompts[i::2], completions[i::2], i, bool(i)) for i in (0, 1)]
  return T.LMExamples.concat(parts)


def _reference_mask(segment_ids, positions, prefix):
  """Built here independently: q sees k iff same segment and (k <= q or both in prefix)."""
  l = len(segment_ids)
  allowed = np.zeros((l, l), bool)
  for q in range(l):
    for k in range(l):
      allowed[q, k] = segment_ids[q] == segment_ids[k] and (
          positions[k] <= positions[q] or (prefix[q] and prefix[k]))
  return allowed


def test_packing():
  rng = np.random.default_rng(0)
  ex = _random_examples(rng, 300, 40)
  rows, stats = T.pack(ex, row_length=48, open_rows=8)
  assert set(rows) == set(T.BATCH_KEYS) and stats.num_truncated == 0
  assert {k: v.dtype for k, v in rows.items()} == {
      "tokens": np.int32, "targets": np.int32, "loss_mask": np.float32,
      "segment_ids": np.int32, "positions": np.int32, "prefix": np.bool_}
  assert stats.num_tokens == ex.lengths.sum() and stats.fill > 0.8
  found = collections.Counter()
  for r in range(stats.num_rows):
    seg, pos = rows["segment_ids"][r], rows["positions"][r]
    n_seg = seg.max()
    assert set(np.unique(seg[seg > 0])) == set(range(1, n_seg + 1))
    for s in range(1, n_seg + 1):
      where = np.flatnonzero(seg == s)
      assert (np.diff(where) == 1).all()                 # contiguous
      np.testing.assert_array_equal(pos[where], np.arange(len(where)))
      tok = rows["tokens"][r, where]
      np.testing.assert_array_equal(rows["targets"][r, where[:-1]], tok[1:])
      assert rows["loss_mask"][r, where[-1]] == 0 and rows["targets"][r, where[-1]] == 0
      found[tuple(tok.tolist())] += 1
    assert (rows["tokens"][r, seg == 0] == 0).all() and (rows["loss_mask"][r, seg == 0] == 0).all()
  expected = collections.Counter(tuple(ex.example(i).tolist()) for i in range(len(ex)))
  assert found == expected                             # nothing lost, nothing duplicated
  # Loss counts: sum over examples of their completion lengths.
  assert rows["loss_mask"].sum() == (ex.lengths - ex.num_prompt).sum()
  for r in range(min(stats.num_rows, 12)):
    seg, pos, pre = rows["segment_ids"][r], rows["positions"][r], rows["prefix"][r]
    allowed = _reference_mask(seg, pos, pre)
    np.testing.assert_array_equal(T.attention_mask(seg, pos, pre), allowed)
    real = seg > 0
    q, k = np.nonzero(allowed & real[:, None])
    assert (seg[q] == seg[k]).all()                    # never another segment nor padding
    # Prefix tokens never see a generated token; a scored position never sees its target.
    assert not (pre[q] & ~pre[k] & (pos[k] > pos[q])).any()
    assert not ((pos[k] > pos[q]) & ~pre[q]).any()


def test_packing_overflow():
  rng = np.random.default_rng(1)
  ex = _random_examples(rng, 20, 30)
  long = int((ex.lengths > 16).sum())
  assert long > 0
  with pytest.raises(ConfigError, match="row_length"):
    T.pack(ex, row_length=16, overflow="error")
  rows, stats = T.pack(ex, row_length=16)
  assert stats.num_truncated == long and stats.num_examples == 20
  assert (rows["segment_ids"].max(axis=1) >= 1).all()
  with pytest.raises(ConfigError, match="overflow"):
    T.pack(ex, row_length=16, overflow="drop")


def test_mix_weights(world, examples):
  mixed = T.mix(examples, {"sid2text": 1.0, "next": 3.0, "masked": 0.0}, seed=0,
                num_examples=40)
  counts = np.bincount(mixed.task, minlength=len(TASKS))
  assert counts[TASKS.index("sid2text")] == 10 and counts[TASKS.index("next")] == 30
  assert counts[TASKS.index("masked")] == 0 and counts[TASKS.index("text2sid")] == 0
  # 30 draws from 11 next-item examples: each twice, then 8 more distinct ones.
  nxt = collections.Counter(tuple(mixed.example(i).tolist()) for i in np.flatnonzero(
      mixed.task == TASKS.index("next")))
  assert sorted(collections.Counter(nxt.values()).items()) == [(2, 3), (3, 8)]
  again = T.mix(examples, {"sid2text": 1.0, "next": 3.0}, seed=0, num_examples=40)
  np.testing.assert_array_equal(again.tokens, mixed.tokens)
  with pytest.raises(ConfigError, match="weights"):
    T.mix({"next": examples["next"].take([])}, {"next": 1.0}, seed=0)


def test_config_validation(world):
  *_, vocab, _ = world
  bad = [(dict(weights={"nope": 1.0}), "weights.nope"),
         (dict(weights={"next": -1}), "weights.next"),
         (dict(weights={"next": 0.0}), "weights"), (dict(mask_fraction=0.0), "mask_fraction"),
         (dict(row_length=0), "row_length"), (dict(overflow="x"), "overflow"),
         (dict(text_fields=("color",)), "text_fields"), (dict(max_prompt_tokens=3), "max_prompt")]
  for kwargs, field in bad:
    with pytest.raises(ConfigError, match=field):
      T.LMTaskConfig(**kwargs).validate(vocab)


def test_train_iterator_resumes(world, examples):
  mixed = T.mix(examples, {n: 1.0 for n in TASKS}, seed=0)
  rows, stats = T.pack(mixed, row_length=64)
  a = T.train_iterator(rows, batch_size=4, seed=5)
  for _ in range(3):
    next(a)
  state = a.get_state()
  expected = [next(a) for _ in range(4)]
  b = T.train_iterator(rows, batch_size=4, seed=5)
  b.set_state(state)
  for want in expected:
    got = next(b)
    assert set(got) == set(T.BATCH_KEYS)
    for key in T.BATCH_KEYS:
      assert got[key].shape == (4, 64)
      np.testing.assert_array_equal(got[key], want[key])


def test_eval_prompts_match_training_prompts(world, examples):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(max_history=4, mask_fraction=0.5)
  p = T.text2sid_prompts(catalog, table, vocab, [1, 101], cfg)
  assert p.item_ids.tolist() == [1, 101] and p.tokens.shape[0] == 2
  train_prompt = examples["text2sid"].example(0)[:examples["text2sid"].num_prompt[0]]
  np.testing.assert_array_equal(p.tokens[0][p.segment_ids[0] > 0], train_prompt)
  assert (p.tokens[:, -1] == vocab.sep).all() and not p.prefix.any()
  s = T.sid2text_prompts(catalog, table, vocab, [3], cfg)
  assert vocab.decode(s.tokens[0]) == ["<bos>", "<task:sid2text>",
                                       tuple(table.full_codes[2].tolist()), "<sep>"]
  n = T.next_prompts(split.test, catalog, table, vocab, cfg)
  np.testing.assert_array_equal(n.item_ids, split.test.targets)
  np.testing.assert_array_equal(n.user_ids, split.test.user_ids)
  codes = lambda i: tuple(table.full_codes[table.row_of([i])[0]].tolist())
  # User 1's test history: 1 2 3 4 5 101, the last 4 kept; 102 (the target) is absent.
  real = n.tokens[0][n.segment_ids[0] > 0]
  assert vocab.decode(real) == ["<bos>", "<task:next>", codes(3), codes(4), codes(5),
                                codes(101), "<sep>"]
  np.testing.assert_array_equal(n.positions[0][n.segment_ids[0] > 0], np.arange(len(real)))
  # Holding items out of the linking tasks.
  held = T.build_examples(catalog, table, vocab, split, cfg, holdout_items=HELD)
  assert len(held["sid2text"]) == len(TRAIN_ITEMS)


def test_amazon_beauty(shared_data):
  from lrm.data.layout import read_dataset
  ds = read_dataset(shared_data / "amazon_beauty")
  seqs = ds.sequences.take_users(np.arange(400))
  catalog = ds.catalog
  rng = np.random.default_rng(0)
  table = with_collision_level(SIDTable(item_ids=catalog.item_ids,
                                        codes=rng.integers(0, 32, (len(catalog), 3)),
                                        codebook_sizes=(32, 32, 32)))
  vocab = make_joint_vocab(catalog, table.full_codebook_sizes, bpe_vocab_size=4096)
  split = leave_one_out(seqs)
  cfg = T.LMTaskConfig(history_titles=True, max_history=10, max_prompt_tokens=200,
                       row_length=256, num_examples=3000)
  examples = T.build_examples(catalog, table, vocab, split, cfg,
                              holdout_items=catalog.item_ids[1000:])
  assert len(examples["sid2text"]) == 1000
  assert len(examples["next"]) == int((split.train.lengths - 1).sum())
  # No validation or test target is a next-item target in training.
  nxt = examples["next"]
  targets = np.stack([nxt.example(i)[nxt.num_prompt[i]:nxt.num_prompt[i] + vocab.num_levels]
                      for i in range(len(nxt))])
  target_items = table.lookup(vocab.codes_of(targets))
  train_pairs = collections.Counter()
  for u in range(len(split.train)):
    for item in split.train.user(u)[1:]:
      train_pairs[int(item)] += 1
  assert collections.Counter(target_items.tolist()) == train_pairs
  rows, stats = T.training_rows(catalog, table, vocab, split, cfg)
  assert stats.num_examples == 3000 and stats.num_truncated == 0 and stats.fill > 0.9
  seg = rows["segment_ids"]
  last = np.concatenate([seg[:, 1:] != seg[:, :-1], np.ones((len(seg), 1), bool)], axis=1)
  assert (rows["loss_mask"][last] == 0).all()
  prompts = T.next_prompts(split.test, catalog, table, vocab, cfg)
  assert len(prompts) == len(split.test) and (prompts.tokens[:, -1] == vocab.sep).all()
  assert (prompts.segment_ids.sum(axis=1) <= cfg.max_prompt_tokens).all()


# ------------------------------------------------------------------------------------------
# History documents


def _codes(table, item_id):
  return tuple(table.full_codes[table.row_of([item_id])[0]].tolist())


def _scored_targets(examples, i):
  """What the packed row trains example i to predict, in order."""
  row = _single_row(examples, i)
  return row["targets"][row["loss_mask"] > 0]


def test_history_document_layout_and_loss(world):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(weights={"history": 1.0})
  ex = T.build_examples(catalog, table, vocab, split, cfg)["history"]
  L = vocab.num_levels
  # One document per user (all fit a row), from the training part only.
  assert len(ex) == len(split.train) == 3 and (ex.task == TASKS.index("history")).all()
  assert not ex.bidirectional.any()
  c = lambda i: _codes(table, i)
  assert vocab.decode(ex.example(0)) == ["<bos>", "<task:history>", c(1), c(2), c(3), c(4), c(5),
                                         "<eos>"]
  assert vocab.decode(ex.example(1)) == ["<bos>", "<task:history>", c(6), c(7), c(8), c(1),
                                         "<eos>"]
  # Loss on the SID tokens of items 2..n: item 1 has no history, <eos> is not a behaviour.
  row = _single_row(ex, 0)
  expected = np.zeros(128, np.float32)
  expected[1 + L:1 + 5 * L] = 1           # positions whose next token is a SID of items 2..5
  np.testing.assert_array_equal(row["loss_mask"], expected)
  np.testing.assert_array_equal(_scored_targets(ex, 0),
                                np.concatenate([_sid(table, vocab, i) for i in (2, 3, 4, 5)]))
  assert ex.num_prompt[0] == 2 + L
  # Every scored target is a SID token, and no validation / test item appears anywhere.
  held = {_sid(table, vocab, i) for i in HELD}
  for i in range(len(ex)):
    targets = _scored_targets(ex, i)
    assert (vocab.level_of(targets) >= 0).all()
    assert len(targets) == (split.train.lengths[i] - 1) * L
    tokens = ex.example(i).tolist()
    assert not {tuple(tokens[j:j + L]) for j in range(len(tokens) - L + 1)} & held


def test_history_titles_are_context_without_loss(world):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(weights={"history": 1.0}, history_titles=True, history_title_tokens=2)
  ex = T.build_examples(catalog, table, vocab, split, cfg)["history"]
  seg = vocab.decode(ex.example(0))
  assert seg[:2] == ["<bos>", "<task:history>"] and seg[-1] == "<eos>"
  items = seg[2:-1]
  assert items[0::3] == [_codes(table, i) for i in (1, 2, 3, 4, 5)]
  assert set(items[1::3]) == {"<field:title>"}
  assert all(len(vocab.encode_text(t)) == 2 for t in items[2::3])
  # The scored targets are the SIDs of items 2..5 and nothing else: no title token, no marker.
  np.testing.assert_array_equal(_scored_targets(ex, 0),
                                np.concatenate([_sid(table, vocab, i) for i in (2, 3, 4, 5)]))


def test_history_windows_tile_every_target_once():
  # Four items of 3 tokens fit; one item of overlap.
  assert T.history_windows(np.full(10, 3), room=12, overlap=2) == [
      (0, 1, 4), (2, 4, 6), (4, 6, 8), (6, 8, 10)]
  assert T.history_windows(np.full(4, 3), room=12, overlap=2) == [(0, 1, 4)]   # whole
  assert T.history_windows(np.full(1, 3), room=12, overlap=2) == []            # no target
  rng = np.random.default_rng(0)
  for _ in range(200):
    n, overlap = int(rng.integers(0, 40)), int(rng.integers(1, 4))
    cost = rng.integers(1, 8, n)
    room = int(rng.integers((overlap + 1) * 7, 60))
    spans = T.history_windows(cost, room=room, overlap=overlap)
    targets = [j for _, first, end in spans for j in range(first, end)]
    assert targets == list(range(1, n))
    for start, first, end in spans:
      assert start == max(0, first - overlap) and cost[start:end].sum() <= room
    if n > 1 and cost.sum() <= room:
      assert len(spans) == 1                                  # a document that fits is whole
  with pytest.raises(ConfigError, match="history_overlap"):
    T.history_windows(np.array([3, 3, 9]), room=11, overlap=1)


def test_long_history_is_split_into_overlapping_windows(world):
  catalog, table, vocab, split = world
  L = vocab.num_levels
  # A row holds <bos> <task> <eos> and 3 items: user 1's 5 training items need two windows.
  cfg = T.LMTaskConfig(weights={"history": 1.0}, row_length=3 + 3 * L, history_overlap=1)
  ex = T.build_examples(catalog, table, vocab, split, cfg)["history"]
  c = lambda i: _codes(table, i)
  assert vocab.decode(ex.example(0)) == ["<bos>", "<task:history>", c(1), c(2), c(3), "<eos>"]
  assert vocab.decode(ex.example(1)) == ["<bos>", "<task:history>", c(3), c(4), c(5), "<eos>"]
  # Item 3 is a target in the first window and context (no loss) in the second.
  np.testing.assert_array_equal(_scored_targets(ex, 0), np.concatenate(
      [_sid(table, vocab, i) for i in (2, 3)]))
  np.testing.assert_array_equal(_scored_targets(ex, 1), np.concatenate(
      [_sid(table, vocab, i) for i in (4, 5)]))
  # Over all users: each training target scored exactly once, every window within a row.
  assert (ex.lengths <= cfg.row_length).all()
  rows, stats = T.pack(ex, row_length=cfg.row_length)
  assert stats.num_truncated == 0
  assert rows["loss_mask"].sum() == (split.train.lengths - 1).sum() * L
  # A window that cannot hold its overlap and one target is a config error.
  with pytest.raises(ConfigError, match="history_overlap"):
    T.LMTaskConfig(weights={"history": 1.0}, row_length=3 + 3 * L,
                   history_overlap=3).validate(vocab)


def test_packing_keeps_history_documents_whole(world):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(weights={"history": 1.0, "next": 1.0, "sid2text": 1.0}, max_history=4)
  mixed = T.mix(T.build_examples(catalog, table, vocab, split, cfg), cfg.weights, seed=0)
  rows, stats = T.pack(mixed, row_length=64, open_rows=4)
  assert stats.num_truncated == 0
  docs = {i: tuple(mixed.example(i).tolist()) for i in range(len(mixed))}
  want = {docs[i]: mixed.scored[mixed.offsets[i]:mixed.offsets[i + 1]]
          for i in np.flatnonzero(mixed.task == TASKS.index("history"))}
  found = set()
  for r in range(stats.num_rows):
    seg = rows["segment_ids"][r]
    for s in range(1, seg.max() + 1):
      where = np.flatnonzero(seg == s)
      tokens = tuple(rows["tokens"][r, where].tolist())
      if tokens in want:                      # a whole document in one segment of one row
        found.add(tokens)
        scored = want[tokens]
        np.testing.assert_array_equal(rows["loss_mask"][r, where[:-1]], scored[1:])
        np.testing.assert_array_equal(rows["targets"][r, where[:-1]][scored[1:]],
                                      np.asarray(tokens)[1:][scored[1:]])
  assert found == set(want)


def test_history_eval_prompts_continue_the_document(world):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(weights={"history": 1.0}, max_history=4)
  c = lambda i: _codes(table, i)
  n = T.next_prompts(split.test, catalog, table, vocab, cfg)
  assert n.task == "history" and not n.prefix.any()
  np.testing.assert_array_equal(n.item_ids, split.test.targets)
  # User 1's test history 1 2 3 4 5 101, the last 4 kept; no <sep>: the next SID follows.
  real = n.tokens[0][n.segment_ids[0] > 0]
  assert vocab.decode(real) == ["<bos>", "<task:history>", c(3), c(4), c(5), c(101)]
  # The validation prompt of a user is their training document up to its end.
  wide = T.LMTaskConfig(weights={"history": 1.0}, max_history=20)
  v = T.next_prompts(split.valid, catalog, table, vocab, wide)
  doc = T.build_examples(catalog, table, vocab, split, wide)["history"].example(0)
  np.testing.assert_array_equal(v.tokens[0][v.segment_ids[0] > 0], doc[:-1])
  # The format follows the weights unless set: next wins when it is trained too.
  both = T.LMTaskConfig(weights={"history": 1.0, "next": 1.0})
  assert T.next_prompts(split.test, catalog, table, vocab, both).task == "next"
  forced = T.LMTaskConfig(weights={"history": 1.0, "next": 1.0}, next_item_prompt="history")
  assert T.next_prompts(split.test, catalog, table, vocab, forced).task == "history"


def test_history_config_errors(world):
  catalog, table, vocab, _ = world
  with pytest.raises(ConfigError, match=r"lm_tasks\.weights\.histroy.*unknown task"):
    T.LMTaskConfig(weights={"histroy": 1.0}).validate(vocab)
  with pytest.raises(ConfigError, match=r"lm_tasks\.next_item_prompt"):
    T.LMTaskConfig(next_item_prompt="sid2text").validate()
  with pytest.raises(ConfigError, match=r"lm_tasks\.history_overlap"):
    T.LMTaskConfig(history_overlap=0).validate()
  # A vocabulary built before the task existed has no <task:history>.
  from lrm.tokens.joint_vocab import JointVocab
  old = JointVocab(vocab.tokenizer, vocab.codebook_sizes, num_sentinels=4,
                   tasks=("sid2text", "text2sid", "next", "masked"))
  with pytest.raises(ConfigError, match=r"lm_tasks\.weights\.history.*<task:history>"):
    T.LMTaskConfig(weights={"history": 1.0}).validate(old)
  T.LMTaskConfig().validate(old)                   # the four-task mix still works on it


# ------------------------------------------------------------------------------------------
# Dense linking and the mixed document


def _text(vocab, value, n=None):
  return vocab.encode_text(field_text(value))[:n].tolist()


def _segments(rows):
  """(tokens, loss_mask) of every packed segment, row by row."""
  out = []
  for r in range(len(rows["tokens"])):
    seg = rows["segment_ids"][r]
    for s in range(1, seg.max() + 1):
      where = np.flatnonzero(seg == s)
      out.append((tuple(rows["tokens"][r, where].tolist()),
                  tuple(rows["loss_mask"][r, where].astype(int).tolist())))
  return out


def _prompt_then_completion_mask(prompt_len, length):
  """loss_mask of a prompt -> completion segment: 1 where the next token is generated."""
  at = np.arange(length)
  return tuple(((at >= prompt_len - 1) & (at < length - 1)).astype(int).tolist())


def test_dense_linking_documents_layout_and_loss(world):
  """Three linked items, both directions, packed several to a row: every segment is exactly
  one expected document, and its loss mask covers the generated side only."""
  catalog, table, vocab, split = world
  linked = [1, 2, 3]
  cfg = T.LMTaskConfig(weights={"sid2text": 1.0, "text2sid": 1.0}, mix_by="passes")
  examples = T.build_examples(catalog, table, vocab, split, cfg,
                              holdout_items=np.setdiff1d(catalog.item_ids, linked))
  rows, stats = T.pack(T.mix(examples, cfg.weights, seed=0, by="passes"), row_length=64)
  bos, sep, eos = vocab.bos, vocab.sep, vocab.eos
  f = vocab.field
  expected = []
  for item in linked:
    r = int(catalog.rows([item])[0])
    sid = list(_sid(table, vocab, item))
    texts = {name: _text(vocab, catalog.fields[name][r]) for name in FIELDS
             if name in catalog.fields and field_text(catalog.fields[name][r]) is not None}
    # sid -> title / brand / categories: <bos> <task> sid <sep> | markers and texts <eos>.
    prompt = [bos, vocab.task("sid2text"), *sid, sep]
    completion = [tok for name, ids in texts.items() for tok in [f(name), *ids]] + [eos]
    expected.append((prompt, completion))
    # text -> sid, one document per field: <bos> <task> <field> text <sep> | sid <eos>.
    for name, ids in texts.items():
      expected.append(([bos, vocab.task("text2sid"), f(name), *ids, sep], [*sid, eos]))
  want = collections.Counter(
      (tuple(p + c), _prompt_then_completion_mask(len(p), len(p + c))) for p, c in expected)
  assert collections.Counter(_segments(rows)) == want
  # Item 1 has three fields, item 2 no categories, item 3 no brand: 3 + 7 documents.
  assert len(expected) == stats.num_examples == 10
  assert stats.num_rows < stats.num_examples                   # several items per row
  assert stats.num_truncated == 0


def test_dense_linking_shows_every_item_once_per_direction(world):
  catalog, table, vocab, split = world
  held = [101, 102]
  linked = [int(i) for i in catalog.item_ids if i not in held]
  weights = {"history": 1.0, "sid2text": 1.0, "text2sid": 1.0}
  cfg = T.LMTaskConfig(weights=weights, mix_by="passes")
  examples = T.build_examples(catalog, table, vocab, split, cfg, holdout_items=held)
  item_of_sid = {_sid(table, vocab, i): i for i in catalog.item_ids.tolist()}
  field_of = {vocab.field(name): name for name in FIELDS if name in vocab.fields}
  L = vocab.num_levels

  def seen(mixed):
    """Counters of the items a mixture links: sid2text by item, text2sid by (item, field)."""
    sid2text, text2sid = collections.Counter(), collections.Counter()
    for i in range(len(mixed)):
      tokens, p = mixed.example(i), mixed.num_prompt[i]
      if mixed.task[i] == TASKS.index("sid2text"):
        sid2text[item_of_sid[tuple(tokens[2:2 + L].tolist())]] += 1
      elif mixed.task[i] == TASKS.index("text2sid"):
        text2sid[item_of_sid[tuple(tokens[p:p + L].tolist())], field_of[int(tokens[2])]] += 1
    return sid2text, text2sid

  present = [(i, name) for i in linked for name in ("title", "brand", "categories")
             if field_text(catalog.fields[name][int(catalog.rows([i])[0])]) is not None]
  once = T.mix(examples, weights, seed=0, by="passes")
  sid2text, text2sid = seen(once)
  assert sid2text == collections.Counter(linked)                # every linked item, once
  assert text2sid == collections.Counter(present)               # every (item, field), once
  assert (once.task == TASKS.index("history")).sum() == len(split.train)
  twice = T.mix(examples, {**weights, "sid2text": 2.0, "text2sid": 2.0}, seed=0, by="passes")
  assert seen(twice) == (collections.Counter(linked * 2), collections.Counter(present * 2))
  # By share, the same weights split one total evenly: text2sid's larger pool is sampled.
  assert seen(T.mix(examples, weights, seed=0))[1] != collections.Counter(present)


def test_draw_counts():
  sizes, w = np.array([3, 11, 40]), np.array([1.0, 3.0, 0.5])
  # Share: the old rule, largest remainders first.
  np.testing.assert_array_equal(T.draw_counts(sizes, w, num_examples=40), [9, 27, 4])
  assert T.draw_counts(sizes, w).sum() == sizes.sum()
  np.testing.assert_array_equal(T.draw_counts(sizes, w, by="passes"), [3, 33, 20])
  with pytest.raises(ConfigError, match=r"lm_tasks\.num_examples"):
    T.draw_counts(sizes, w, by="passes", num_examples=10)
  with pytest.raises(ConfigError, match=r"lm_tasks\.mix_by"):
    T.draw_counts(sizes, w, by="epochs")


def _mixed_document(table, vocab, catalog, items, tokens_per_field):
  """The expected `<bos> <task:history> sid <field:title> title [<field:brand> brand] ...`
  with per-token flags: is a SID token, is text beside a SID."""
  doc, is_sid, is_text = [vocab.bos, vocab.task("history")], [False] * 2, [False] * 2
  for item in items:
    r = int(catalog.rows([item])[0])
    sid = list(_sid(table, vocab, item))
    text = []
    for name in ("title", "brand"):
      if field_text(catalog.fields[name][r]) is not None:
        text += [vocab.field(name), *_text(vocab, catalog.fields[name][r], tokens_per_field)]
    doc += sid + text
    is_sid += [True] * len(sid) + [False] * len(text)
    is_text += [False] * len(sid) + [True] * len(text)
  return doc + [vocab.eos], np.array(is_sid + [False]), np.array(is_text + [False])


@pytest.mark.parametrize("text_loss", [False, True])
def test_mixed_history_document_mask(world, text_loss):
  catalog, table, vocab, split = world
  cfg = T.LMTaskConfig(weights={"history": 1.0}, history_titles=True,
                       history_fields=("title", "brand"), history_title_tokens=2,
                       history_text_loss=text_loss)
  ex = T.build_examples(catalog, table, vocab, split, cfg)["history"]
  doc, is_sid, is_text = _mixed_document(table, vocab, catalog, [1, 2, 3, 4, 5], 2)
  assert ex.example(0).tolist() == doc                # item 3 has no brand: title only
  # SIDs of items 2..5 always; the text beside every SID (item 1's too) with the text loss.
  first_target = int(np.flatnonzero(is_sid)[vocab.num_levels])
  scored = is_sid & (np.arange(len(doc)) >= first_target)
  if text_loss:
    scored |= is_text
  np.testing.assert_array_equal(ex.scored[ex.offsets[0]:ex.offsets[1]], scored)
  row = _single_row(ex, 0)
  want = np.zeros(128, np.float32)
  want[:len(doc) - 1] = scored[1:]                   # position j trains token j + 1
  np.testing.assert_array_equal(row["loss_mask"], want)


def test_mixed_history_windows_score_each_text_once(world):
  catalog, table, vocab, split = world
  L = vocab.num_levels
  block = L + 2 * (1 + 2)                            # SID, title and brand of 2 tokens each
  cfg = T.LMTaskConfig(weights={"history": 1.0}, history_titles=True,
                       history_fields=("title", "brand"), history_title_tokens=2,
                       history_text_loss=True, history_overlap=1, row_length=3 + 3 * block)
  ex = T.build_examples(catalog, table, vocab, split, cfg)["history"]
  assert len(ex) > len(split.train)                  # some users need several windows
  # Over all windows: the SIDs of items 2..n and the text of items 1..n, each scored once.
  want = 0
  for u in range(len(split.train)):
    items = split.train.user(u).tolist()
    _, is_sid, is_text = _mixed_document(table, vocab, catalog, items, 2)
    want += (len(items) - 1) * L + int(is_text.sum())
  assert int(ex.scored.sum()) == want
  # User 1's second window opens on item 3, a target of the first window: no loss on it.
  second = ex.scored[ex.offsets[1]:ex.offsets[2]]
  item3 = _mixed_document(table, vocab, catalog, [3], 2)[0][2:-1]
  assert ex.example(1)[2:2 + len(item3)].tolist() == item3
  assert not second[:2 + len(item3)].any() and second[2 + len(item3):-1].any()


def test_dense_and_mixed_config_errors(world):
  *_, vocab, _ = world
  bad = [(dict(mix_by="epochs"), "mix_by"),
         (dict(mix_by="passes", num_examples=100), "num_examples"),
         (dict(history_text_loss=True), "history_text_loss"),           # no text beside SIDs
         (dict(history_titles=True, history_fields=()), "history_fields"),
         (dict(history_titles=True, text_fields=("title",), history_fields=("title", "brand")),
          "history_fields"),
         (dict(weights={"history": 1.0}, history_titles=True, history_fields=("title", "brand"),
               row_length=64), "history_overlap")]
  for kwargs, field in bad:
    with pytest.raises(ConfigError, match=rf"'lm_tasks\.{field}'") as e:
      T.LMTaskConfig(**kwargs).validate(vocab)
    assert "\n" not in str(e.value)
  # Defaults and the fields' neutral values stay valid (existing configs are unchanged).
  T.LMTaskConfig(history_fields=()).validate(vocab)
  T.LMTaskConfig(mix_by="passes").validate(vocab)
