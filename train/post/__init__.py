"""Post-training: the chat format, chat data for supervised fine-tuning, and its objective.

A post-training run is an ordinary run (`python -m train CONFIG`) whose `[post]` section chooses
the method; it usually starts from a pretrained run's weights (`train.init_from`).
"""
