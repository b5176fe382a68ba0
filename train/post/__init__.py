"""Post-training: the chat format and chat data (SFT), and the methods that learn from the model's
own answers (RFT, DPO, GRPO): their prompts and checkers, rollouts, losses and objectives.

A post-training run is an ordinary run (`python -m train CONFIG`) whose `[post]` section chooses
the method; it usually starts from a pretrained run's weights (`train.init_from`).
"""
