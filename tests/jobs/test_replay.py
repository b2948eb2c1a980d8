"""The replay of new items gaining impressions (lrm/jobs/replay.py), on a tiny synthetic world."""

from __future__ import annotations

import json
import math
import pathlib

import ml_collections
import numpy as np
import pytest

from lrm.core.config import load_config
from lrm.core.errors import ConfigError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.jobs.ranking import item_content
from lrm.jobs.replay import (HeldOutClicks, TruthClicks, build_tower, click_model,
                             count_impressions, curve_area, draw_clicks, explore,
                             first_round_reaching, fit_mixture, item_clusters, make_optimizer,
                             mark_known, mixture_log_q, replay, replay_data, replay_defaults,
                             replay_section, round_metrics, run, score_items, slates, summarize)

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
WORLD = dict(seed=0, branching=(3, 2, 2), num_items=150, num_users=80,
             modalities=(("visual", 8),))


def _section(**kw) -> ml_collections.ConfigDict:
  s = replay_defaults()
  s.update(train_steps=30, batch_size=32, rounds=3, users_per_round=30, update_steps=5,
           num_clusters=8, kmeans_iters=5, d=16, max_history=8, slate_size=5, eval_k=5)
  s.update(kw)
  return s


@pytest.fixture(scope="module")
def tiny():
  world = make_world(WorldConfig(**WORLD))
  data = replay_data(world.dataset, cold_fraction=0.1, max_history=8, seed=0)
  content = item_content(world.catalog)
  clusters = item_clusters(content, 8, seed=0, iters=5)
  hist = data.train_history
  known = np.isin(np.arange(data.num_items), np.r_[data.train_target, hist[hist >= 0]])
  return world, data, content, clusters, known


def _trained(tiny, name, rng=None):
  """A tower trained as `replay_variants` trains it (30 steps of the warm positives)."""
  _, data, content, clusters, known = tiny
  model = build_tower(name, _section(), content, clusters, known, seed=0)
  optimizer = make_optimizer(model, 3e-3)
  fit_mixture(model, optimizer, (data.train_history, data.train_target), None, steps=30,
              batch_size=32, new_share=0.0, rng=rng or np.random.default_rng(0))
  return model, optimizer


def test_counting_hand_case():
  slate = np.array([[0, 3, -1], [3, 4, 1]])
  clicked = np.array([[False, True, False], [True, False, True]])
  is_new = np.array([False, False, False, True, True])
  np.testing.assert_array_equal(count_impressions(slate, 5), [1, 1, 0, 2, 1])
  m, shown, clicks = round_metrics(slate, clicked, is_new, np.array([0, 0, 5, 0, 0]),
                                   np.array([0, 0, 1, 0, 0]))
  assert (m["impressions"], m["new_impressions"], m["clicks"], m["new_clicks"]) == (5, 3, 3, 2)
  assert m["new_impression_share"] == pytest.approx(3 / 5)
  assert m["new_covered"] == 1.0 and m["new_clicked"] == 0.5   # item 3 clicked, 4 not
  assert (m["ctr"], m["new_ctr"], m["old_ctr"]) == pytest.approx((3 / 5, 2 / 3, 1 / 2))
  np.testing.assert_array_equal(shown, [1, 1, 5, 2, 1])
  np.testing.assert_array_equal(clicks, [0, 1, 1, 2, 0])
  # A round without new impressions: new CTR is undefined, totals carry over.
  m2, shown, _ = round_metrics(np.array([[2]]), np.array([[False]]), is_new, shown, clicks)
  assert m2["new_ctr"] is None and m2["new_covered"] == 1.0 and shown[2] == 6
  assert first_round_reaching([0.05, 0.1, 0.4, 0.6], 0.1) == 1
  assert first_round_reaching([0.05, 0.1, 0.4, 0.6], 0.5) == 3
  assert first_round_reaching([0.05, 0.1], 0.5) is None
  assert curve_area([0.0, 0.5, 1.0]) == pytest.approx(0.5)
  rounds = [{**m, "warm_recall": 0.3, "cold_recall": 0.1},
            {**m2, "warm_recall": 0.4, "cold_recall": 0.2}]
  s = summarize(rounds, {"warm_recall": 0.5, "cold_recall": 0.25})
  assert s["round_10pct"] == 0 and s["impressions"] == 6
  assert s["new_ctr"] == pytest.approx(2 / 3) and s["ctr"] == pytest.approx(3 / 6)
  assert (s["warm_recall_start"], s["warm_recall_end"]) == (0.3, 0.5)


def test_explore_and_clicks():
  rng = np.random.default_rng(0)
  seen = [np.array([4, 5])] * 50
  out = explore(np.tile([0, 1, 2, 3], (50, 1)), seen, 2, 8, rng)
  np.testing.assert_array_equal(out[:, :2], np.tile([0, 1], (50, 1)))
  for row in out:
    assert set(row[2:]) <= {2, 3, 6, 7} and row[2] != row[3]
  assert len(np.unique(out[:, 2:])) == 4                          # every allowed item drawn
  # Fewer unseen items than slots: the rest stays empty (-1).
  np.testing.assert_array_equal(explore(np.array([[0, 1, 2]]), [np.array([2, 3])], 2, 4, rng),
                                [[0, 1, -1]])
  clicks = draw_clicks(np.ones((2, 3)), np.array([[1, -1, 2], [0, 1, 2]]), rng)
  np.testing.assert_array_equal(clicks, [[True, False, True], [True, True, True]])
  assert not draw_clicks(np.zeros((4, 4)), np.zeros((4, 4), int), rng).any()


def test_truth_clicks_follow_the_planted_affinity(tiny):
  world, data, *_ = tiny
  t = world.truth
  clicks = TruthClicks.from_world(t, world.dataset, data.user, slope=8.0, midpoint=0.6)
  items = np.tile(np.arange(data.num_items), (len(data.user), 1))
  users = np.arange(len(data.user))
  p = clicks.probability(users, items)
  assert p.min() >= 0.0 and p.max() <= 1.0
  # Independently: shared depth of the item's and the user's last-event interest's paths.
  interest = t.event_interest[world.sequences.offsets[data.user + 1] - 1]
  a = (t.leaf_path[t.item_topic][None, :, :] == t.leaf_path[interest][:, None, :]).mean(axis=2)
  np.testing.assert_allclose(p, 1 / (1 + np.exp(-8.0 * (a - 0.6))), rtol=1e-6)
  # Same leaf > sibling > same category > elsewhere, for every user.
  same_leaf = t.item_topic[None, :] == interest[:, None]
  assert (a[same_leaf] == 1.0).all() and p[same_leaf].min() == pytest.approx(
      1 / (1 + math.exp(-3.2)))
  levels = [p[a == v] for v in (0.0, 1 / 3, 2 / 3, 1.0)]
  assert all(len(x) for x in levels)
  assert all(lo.max() < hi.min() for lo, hi in zip(levels, levels[1:]))
  # Clicks drawn from it: more often on the user's own leaf than elsewhere.
  drawn = draw_clicks(p, items, np.random.default_rng(0))
  assert drawn[same_leaf].mean() > 0.8 > 0.05 > drawn[a == 0].mean()


def test_held_out_clicks_and_data(tiny):
  clicks = HeldOutClicks([np.array([2, 5]), np.array([], np.int64)])
  np.testing.assert_array_equal(clicks.probability(np.array([1, 0]), np.array([[2, 5], [5, 1]])),
                                [[0, 0], [1, 0]])
  world, data, *_ = tiny
  for j in range(len(data.user)):
    hist = data.history[j][data.history[j] >= 0]
    assert np.isin(hist, data.seen[j]).all()
    assert not np.isin(data.future[j], data.seen[j]).any()
    # seen and future split the user's items; the held-out target is in one of them (a
    # re-consumed item is in both the history and the future, and counts as seen).
    u = data.user[j]
    items = world.catalog.rows(world.sequences.items[world.sequences.offsets[u]:
                                                     world.sequences.offsets[u + 1]])
    np.testing.assert_array_equal(np.union1d(data.seen[j], data.future[j]), np.unique(items))
  # New items never occur in training; `auto` picks truth clicks when the world is given.
  assert not np.isin(data.new_rows, np.r_[data.train_target, data.train_history.ravel()]).any()
  assert isinstance(click_model(_section(), data, world.dataset, world.truth), TruthClicks)
  assert isinstance(click_model(_section(), data, world.dataset), HeldOutClicks)
  with pytest.raises(ConfigError, match="replay.click_model"):
    click_model(_section(click_model="truth"), data, world.dataset)


def test_mixture_log_q():
  q = np.exp(mixture_log_q(np.array([0, 0, 1, 2]), np.array([3]), 0.25, 5))
  np.testing.assert_allclose(q, [0.375, 0.1875, 0.1875, 0.25, 0.0], rtol=1e-6)
  np.testing.assert_allclose(np.exp(mixture_log_q(np.array([0, 1, 1, 1]), np.array([], int),
                                                  0.0, 2)), [0.25, 0.75], rtol=1e-6)


def test_config_errors():
  assert replay_section(ml_collections.ConfigDict()).to_dict() == replay_defaults().to_dict()
  with pytest.raises(ConfigError, match="replay.bogus"):
    replay_section(ml_collections.ConfigDict({"replay": {"bogus": 1}}))
  for field, value in (("rounds", 0), ("explore_slots", 11), ("click_share", 1.5),
                       ("click_model", "oracle"), ("variants", ("nope",)),
                       ("cold_fraction", 1.0), ("users_per_round", -1)):
    with pytest.raises(ConfigError, match=f"replay.{field}"):
      replay_section(ml_collections.ConfigDict({"replay": {field: value}}))


def test_id_only_has_no_signal_for_new_items_cluster_ids_reach_them(tiny):
  _, data, *_ = tiny
  new = data.new_rows
  model, optimizer = _trained(tiny, "id_only")
  # Every never-clicked new item gets the same score from every user: no learned signal.
  s = score_items(model, data.history)[:, new]
  np.testing.assert_allclose(s, s[:, :1].repeat(len(new), 1), atol=1e-6)
  # A first click starts the item's ID: flag on, fresh zero row, trained from then on.
  assert list(mark_known(model, new[:1])) == [new[0]]
  assert bool(model.id_known[...][new[0]])
  assert not np.asarray(model.id_emb.embedding[...][new[0]]).any()
  assert len(mark_known(model, new[:1])) == 0
  fit_mixture(model, optimizer, (data.train_history, data.train_target),
              (data.history[:2], np.full(2, new[0], np.int32)), steps=5, batch_size=32,
              new_share=0.5, rng=np.random.default_rng(1))
  s = score_items(model, data.history)[:, new]
  assert np.abs(s[:, 0] - s[:, 1]).max() > 1e-3
  np.testing.assert_allclose(s[:, 1], s[:, 2], atol=1e-6)      # still never clicked

  cluster, _ = _trained(tiny, "cluster_ids")
  scores = score_items(cluster, data.history)
  assert np.abs(scores[:, new] - scores[:, new[:1]]).max() > 1e-3
  # Round-0 slates (exact top-k of the unseen items) reach new items.
  top = slates(cluster, data.history, data.seen, 5, order=np.arange(data.num_items),
               batch_size=30)                    # the replay's batch: one compile for both
  assert np.isin(top, new).any()
  for j in range(len(data.user)):
    assert not np.isin(top[j], data.seen[j]).any() and len(set(top[j])) == 5
    masked = scores[j].copy()
    masked[data.seen[j]] = -np.inf
    assert masked[top[j]].min() >= np.sort(masked)[-5] - 1e-6


def test_replay_is_seeded_and_counts_every_impression(tiny, tmp_path):
  config = load_config(CONFIGS / "base.py", "runlocal")
  config.world.update(seed=0, branching=(3, 2, 2), num_items=150, num_users=80)
  config.world.modalities = {"visual": 8}        # replaces the dict (update would merge)
  config.replay = _section(variants=("cluster_ids",))
  config.run_dir = str(tmp_path / "run")
  out = run(config)
  saved = json.loads((tmp_path / "run" / "replay" / "results.json").read_text())
  rounds = saved["variants"]["cluster_ids"]["rounds"]
  assert out["click_model"] == "TruthClicks" and len(rounds) == 3
  for r in rounds:
    assert r["users"] == 30 and r["impressions"] == 30 * 5
  covered = [r["new_covered"] for r in rounds]
  assert covered == sorted(covered) and covered[-1] > 0
  # The same seed through the API (world in memory, not read back from disk): the same
  # trajectory, round by round; a callback sees each round.
  world, data, *_ = tiny
  model, optimizer = _trained(tiny, "cluster_ids", rng=np.random.default_rng([0, 0]))
  clicks = TruthClicks.from_world(world.truth, world.dataset, data.user, slope=8.0,
                                  midpoint=0.6)
  seen = []
  result = replay(model, optimizer, data, clicks, _section(), seed=0, on_round=seen.append)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]
  assert strip(result["rounds"]) == strip(rounds)
  assert [r["round"] for r in seen] == [0, 1, 2] and result["rounds"] == seen
  assert result["summary"]["impressions"] == 3 * 30 * 5
