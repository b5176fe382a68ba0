"""Preference pairs for DPO from a JSONL file, in TRL's format:

    {"prompt": "2+3=", "chosen": "5", "rejected": "6"}                       (standard)
    {"prompt": [{"role": "user", "content": "2+3="}],
     "chosen": [{"role": "assistant", "content": "5"}], "rejected": [...]}     (conversational)

The prompt becomes the user turn (or the given turns) of a chat prompt; chosen and rejected are
the assistant's answers, each ending with <|end|>. As for SFT data, a hash of each line puts
post.val_fraction of the pairs in the validation split, whose DPO accuracy and margin a run's
evaluations log.
"""


import numpy as np
import torch

from ..errors import ConfigError
from .chat_format import Message, parse_conversation
from .jsonl import read_split
from .losses import dpo_loss, token_logprobs
from .rollouts import pack


def _answer(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    raise ConfigError(f'{where}: "chosen" and "rejected" must each be a string or one assistant message')


def read_pair(record, where: str) -> tuple[list[Message], str, str]:
    """(prompt turns, chosen, rejected) of one JSONL record, or a one-line ConfigError."""
    if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= record.keys():
        raise ConfigError(f'{where}: expected {{"prompt": ..., "chosen": ..., "rejected": ...}}')
    prompt = record["prompt"]
    if isinstance(prompt, str):
        turns = [Message("user", prompt)]
    elif isinstance(prompt, list):  # the turns before the answer; checked as a conversation
        turns = parse_conversation({"messages": prompt + [{"role": "assistant", "content": ""}]}, where)[:-1]
    else:
        raise ConfigError(f'{where}: "prompt" must be a string or a list of messages')
    return turns, _answer(record["chosen"], where), _answer(record["rejected"], where)


class PairSet:
    """The train and validation pairs of post.data as token ids."""

    def __init__(self, post, tok, block_size: int):
        self.splits = {}
        for name, pairs in read_split(post.data, post.val_fraction, read_pair, "DPO: a JSONL of pairs").items():
            if not pairs:
                raise ConfigError(f"post.data={post.data!r} has no {name} pairs; use more pairs or another "
                                  "post.val_fraction")
            encoded = [(tok.chat.prompt(turns), tok.encode(c) + [tok.eot], tok.encode(r) + [tok.eot])
                       for turns, c, r in pairs]
            too_long = sum(len(p) + max(len(c), len(r)) > block_size for p, c, r in encoded)
            if too_long:
                raise ConfigError(f"post.data={post.data!r}: {too_long} {name} pairs exceed model.block_size="
                                  f"{block_size} tokens")
            self.splits[name] = encoded
        self.eot = tok.eot

    def draw(self, n: int, key: tuple[int, ...]) -> tuple[list, list, list]:
        rng = np.random.default_rng(np.random.SeedSequence(key))
        picked = [self.splits["train"][i] for i in rng.integers(0, len(self.splits["train"]), size=n)]
        return [p for p, _, _ in picked], [c for _, c, _ in picked], [r for _, _, r in picked]

    @torch.no_grad()
    def evaluate(self, policy, reference, beta: float, batch: int = 32) -> dict[str, float]:
        """The validation pairs: DPO loss, accuracy (the chosen answer's implicit reward is the
        higher) and mean margin."""
        device = next(policy.parameters()).device
        pairs = self.splits["val"]
        was_training, margins, losses = policy.training, [], []
        policy.eval()
        for s in range(0, len(pairs), batch):
            prompts, chosen, rejected = map(list, zip(*pairs[s:s + batch]))
            ids, mask = pack(prompts * 2, chosen + rejected, self.eot, device)
            pol = (token_logprobs(policy(ids), ids) * mask).sum(1)
            ref = (token_logprobs(reference(ids), ids) * mask).sum(1)
            n = len(prompts)
            loss, m = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta)
            margins.append(m)
            losses.append(loss * n)
        policy.train(was_training)
        m = torch.cat(margins)
        return {"val_dpo_loss": float(sum(losses)) / len(m), "val_dpo_acc": float((m > 0).float().mean()),
                "val_dpo_margin": float(m.mean())}
