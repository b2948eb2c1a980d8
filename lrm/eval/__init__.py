"""Evaluation: retrieval metrics on item lists, predictions files, result records."""

from lrm.eval.metrics import (DEFAULT_KS, check_ranked, drop_seen, hit_ranks,
                              most_popular_ranking, rank_full_scores, retrieval_metrics)
from lrm.eval.report import (PREDICTIONS, TIGER_REFERENCE, read_predictions, rescore,
                             results_table, write_predictions, write_results)

__all__ = [
    "DEFAULT_KS", "check_ranked", "drop_seen", "hit_ranks", "most_popular_ranking",
    "rank_full_scores", "retrieval_metrics", "PREDICTIONS", "TIGER_REFERENCE",
    "read_predictions", "rescore", "results_table", "write_predictions", "write_results",
]
