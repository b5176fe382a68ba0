"""Task evaluation beyond bits per byte: `python -m train.eval RUN_DIR --task NAME ...`.

Two kinds of task, each a list of items drawn deterministically from a seed:
- multiple choice (multiple_choice.py): each choice scored by its log-likelihood as a
  continuation of the context, acc and acc_norm as lm-evaluation-harness 0.4 computes them;
- generative (generative.py): a prompt, a reference answer and a checker; pass@k (Chen et al.
  2021) and maj@k (Wang et al. 2022) over sampled completions.
Built-in tasks (tasks.py names them): arithmetic, python-eval, passkey (generative) and
stdlib-cloze (multiple choice); any JSONL file of multiple-choice items (jsonl.py). suite.py runs
them on a model and reports the table, the JSON and the CORE-style aggregate.
"""
