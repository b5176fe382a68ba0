"""`python -m train.chat RUN_DIR [--once TEXT] [--temperature T] [--top_k K] [--max_new_tokens N] ...`

A multi-turn chat with a run's model, its answers streamed as they are generated. A chat run
(post.method = "sft", train/post/) is prompted in its chat format and answers until <|end|>; a
base run is prompted with "User: ...\\nAssistant:" and answers until a newline.

The KV cache is kept from turn to turn, so a turn pays only for its own tokens. When the next turn
would not fit the context (model.block_size), the conversation starts over, with a note. Commands:
/reset (start over), /temperature T, /quit (or Ctrl-D, Ctrl-C). --once TEXT answers one message and
exits, for scripts.
"""

import argparse
import sys

import torch

from model.inference.sampling import TOP_K, sample_next

from .cli import argument_parser, check_sampling, check_temperature, is_utf8, run_cli
from .errors import ConfigError
from .hardware import autocast, on_device, pick_device, pick_dtype
from .post.chat_format import ChatTokenizer, Message
from .run import load_run
from .tokenizer import for_run


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser("python -m train.chat", __doc__)
    p.add_argument("run_dir", help="a training run's directory (train.out_dir)")
    p.add_argument("--once", default=None, help="answer this one message and exit")
    p.add_argument("--temperature", type=float, default=0.6, help="softmax temperature; 0 = greedy (default 0.6)")
    p.add_argument("--top_k", type=int, default=TOP_K, help=f"sample among the k most likely tokens (default {TOP_K})")
    p.add_argument("--max_new_tokens", type=int, default=256, help="the longest answer (default 256)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--step", type=int, default=None, help="this checkpoint (default: the newest)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = p.parse_args(argv)
    check_sampling(args)
    return args


class Chat:
    """One conversation with `model`: `turn(text, emit)` answers a user message, calling `emit`
    with each new piece of text, and returns the answer."""

    def __init__(self, model, tok, max_new_tokens: int, temperature: float, top_k: int, generator):
        self.model, self.tok, self.max_new = model, tok, max_new_tokens
        self.temperature, self.top_k, self.generator = temperature, top_k, generator
        self.chat = getattr(tok, "chat", None)
        self.reset()

    def reset(self) -> None:
        self.cache = self.model.new_cache(1)
        self.pending: list[int] = []  # ids already said but not yet in the cache (the last <|end|>)
        self.length = 0  # positions in the cache
        self.tokens: list[int] = []  # the conversation's ids so far, those pending included

    def user_ids(self, text: str) -> list[int]:
        if self.chat is None:
            return self.tok.encode(f"User: {text}\nAssistant:")
        return self.chat.prompt([Message("user", text)])

    @torch.no_grad()
    def turn(self, text: str, emit=lambda piece: None) -> str:
        ids = self.pending + self.user_ids(text)
        block_size = self.model.config.block_size
        room = block_size - self.length - len(ids)  # for the answer
        if self.length and room < min(self.max_new, block_size // 2):
            print("(the context is full: the conversation starts over)", file=sys.stderr)
            self.reset()
            ids = self.user_ids(text)
        if len(ids) >= block_size:
            raise ConfigError(f"the message ({len(ids)} tokens) fills the context (model.block_size={block_size})")
        budget = min(self.max_new, block_size - self.length - len(ids))  # the answer must fit too
        device = self.model.transformer.ln_f.weight.device
        logits = self.model(torch.tensor([ids], device=device), cache=self.cache)[:, -1]
        self.length += len(ids)
        self.tokens += ids[len(self.pending):]
        new, shown, stopped = [], "", False
        for _ in range(budget):
            token = sample_next(logits, self.temperature, self.top_k, generator=self.generator)
            new.append(int(token))
            stopped = new[-1] == self.tok.eot
            text = self.tok.decode(new[:-1] if stopped else new)
            stopped = stopped or (self.chat is None and "\n" in text)  # a base run's answer is one line
            answer = text if self.chat is not None else text.split("\n")[0]
            if not answer.endswith("\ufffd"):  # a character cut between byte tokens waits for the rest
                emit(answer[len(shown):])
                shown = answer
            if stopped:
                break
            logits = self.model(token.view(1, 1), cache=self.cache)[:, -1]
            self.length += 1
        self.pending = new[-1:] if stopped else []  # the stop token enters the cache with the next turn
        self.tokens += new
        emit(answer[len(shown):])
        return answer


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = load_run(args.run_dir, args.step)
    tok = for_run(run.run_dir)
    if run.cfg.post.chat:
        tok = ChatTokenizer(tok)
    device = pick_device(args.device, "--device")
    dtype = pick_dtype(run.cfg.train.dtype, device)
    model = on_device(run.model, device, dtype)  # each layer on its kernel for the device
    chat = Chat(model, tok, args.max_new_tokens, args.temperature, args.top_k,
                torch.Generator(device).manual_seed(args.seed))
    emit = lambda piece: print(piece, end="", flush=True)  # noqa: E731
    with autocast(device, dtype):
        if args.once is not None:
            chat.turn(args.once, emit)
            print()
            return 0
        print(f"# {run.checkpoint.name} of {run.run_dir}; /reset, /temperature T, /quit", file=sys.stderr)
        return _loop(chat, emit)


def _loop(chat: Chat, emit) -> int:
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not is_utf8(text):
            print("error: that line is not valid UTF-8 text; nothing was sent", file=sys.stderr)
            continue
        command, _, value = text.strip().partition(" ")
        if command == "/quit":
            return 0
        if command == "/reset":
            chat.reset()
            continue
        if command == "/temperature":
            try:
                chat.temperature = check_temperature(float(value), "/temperature")
            except ValueError as e:  # from float(), or check_temperature's ConfigError
                print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
            continue
        try:
            chat.turn(text, emit)
        except KeyboardInterrupt:  # stop this answer; its cache holds part of it, so start over
            chat.reset()
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
        print()


if __name__ == "__main__":
    sys.exit(run_cli(main))
