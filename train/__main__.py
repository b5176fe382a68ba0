"""`python -m train CONFIG.toml [--section.key=value ...] [--debug]` trains a model.

CONFIG is a TOML file, or `preset:NAME` (or `--preset NAME`) for configs/presets/NAME.toml.
Running the same command again with the same train.out_dir resumes from its latest checkpoint.
SIGTERM or Ctrl-C finishes the current step, writes a checkpoint and exits with 143 or 130.
"""

import sys

from .cli import asked_for_help, run_cli
from .config import PRESET_PREFIX, ConfigError, load_config
from .trainer import train

USAGE = ("usage: python -m train CONFIG.toml|preset:NAME|--preset NAME "
         "[--section.key=value ...] [--debug]")


def main(argv: list[str]) -> int:
    if asked_for_help(argv, __doc__, USAGE):
        return 0
    argv = _preset_argument(argv)
    path, overrides = argv[0], argv[1:]
    if path.startswith("--"):
        raise ConfigError(f"the first argument must be a config file; {USAGE}")
    return train(load_config(path, overrides)).get("exit_code", 0)


def _preset_argument(argv: list[str]) -> list[str]:
    """Rewrite `--preset NAME` / `--preset=NAME` (anywhere) as a leading `preset:NAME`."""
    for i, arg in enumerate(argv):
        if arg == "--preset" or arg.startswith("--preset="):
            name = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            rest = argv[:i] + argv[i + (1 if "=" in arg else 2):]
            if not name:
                raise ConfigError(f"--preset needs a name; {USAGE}")
            if rest and not rest[0].startswith("--"):
                raise ConfigError(f"give either a config file or --preset, not both; {USAGE}")
            return [PRESET_PREFIX + name, *rest]
    return argv


if __name__ == "__main__":
    sys.exit(run_cli(main))
