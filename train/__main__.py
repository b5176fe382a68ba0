"""`python -m train CONFIG.toml [--section.key=value ...] [--debug]` trains a model.

Running the same command again with the same train.out_dir resumes from its latest checkpoint.
"""

import sys

from .cli import run_cli
from .config import ConfigError, load_config
from .trainer import train

USAGE = "usage: python -m train CONFIG.toml [--section.key=value ...] [--debug]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0 if argv else 2
    path, overrides = argv[0], argv[1:]
    if path.startswith("--"):
        raise ConfigError(f"the first argument must be a config file; {USAGE}")
    train(load_config(path, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
