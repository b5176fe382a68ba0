"""Task evaluation beyond bits per byte: `python -m train.eval RUN_DIR --task NAME ...`.

Multiple choice (multiple_choice.py) scores each choice by its log-likelihood, as
lm-evaluation-harness 0.4 does; generative tasks (generative.py) check sampled completions, pass@k
(Chen et al. 2021) and maj@k (Wang et al. 2022). tasks.py names the tasks; suite.py runs them and
reports the table, the JSON and the CORE-style aggregate.
"""
