"""train.sample's command line against what the model can do: the generation defaults, the caps it
announces, the decoding flags a model refuses (exit 2, one line, in the flags' words) and
`--draft mtp`."""

import inspect

from model import GPT
from model.generate import generate
from train import sample


def test_the_cli_samples_with_generates_defaults():
    args = sample.parse_args(["RUN"])
    for function in (GPT.generate, generate):
        defaults = inspect.signature(function).parameters
        assert (args.temperature, args.top_k) == (defaults["temperature"].default, defaults["top_k"].default)
    assert (args.temperature, args.top_k) == (0.8, 50)  # what README shows
