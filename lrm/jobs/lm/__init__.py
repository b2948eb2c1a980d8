"""The bilingual SID language model stage (YouTube LRM / PLUM), wiring the stages before it.

  SID table (run_dir/sid) + catalog text -> JointVocab (run_dir/lm/vocab)
  -> sid2text / text2sid / next / masked examples and history documents from leave-one-out's
     training part, mixed by `lm.tasks.weights` and packed into rows (lrm/tasks/lm_tasks.py)
  -> Llama-style LM (a named size, explicit fields, or an HF checkpoint: `lm.init_from`)
  -> the project's trainer (checkpoints, resume, validation, early stopping)
  -> evaluation: text->SID accuracy@1/@10 on held-out titles and SID->text title F1 (items
     whose links were kept out of training), next-item Recall/NDCG@K on validation and test
     (constrained beam search, TIGER's protocol; prompts in the `next` or `history` format,
     `lm.tasks.next_item_prompt`), cold-start recall, the after-item table.

Layout (`lm.variant` "" = run_dir/lm itself; a name = run_dir/lm/<name>, for ablations that
share the vocabulary):
  run_dir/lm/vocab/                 tokenizer.json + joint_vocab.json + manifest
  <stage>/checkpoints/, metrics.jsonl, tensorboard/, train_spec.json, manifest.json
  <stage>/predictions_{valid,test}.jsonl, metrics.json, results.json
  <stage>/after_item/               after_item.npz + manifest (AfterItemTable)

Held-out titles: `lm.eval.text_holdout` items (random, with a title) get no sid2text /
text2sid example; half are the validation set of text->SID, half the test set. They still
occur in sequences, so the model knows their SIDs from behaviour but never saw their title
linked: text->SID on them measures generalisation, not recall of a memorised pair.

Cold start (`lm.cold_start.fraction` > 0): a share of items is removed from every training
interaction (lrm/data/splits.py cold_start_split); their text stays in the linking tasks.
Warm metrics then come from leave-one-out of the remaining sequences, and `cold_test` is the
next-item recall of users whose held-out target is a cold item.

Modules: config.py (the `lm` section, `validate`), prepare.py (vocabulary, splits, rows, the
model), metrics.py (text2sid, sid2text F1, next-item ranking, validation), train.py (train,
restore, evaluate; `run` and `evaluate`), after_item.py (the offline table), continued.py
(`continue_pretraining` onto a grown catalog, with a freshness curve).
"""

from lrm.jobs.lm.train import evaluate, run

__all__ = ["evaluate", "run"]

