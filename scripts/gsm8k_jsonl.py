"""`python scripts/gsm8k_jsonl.py GSM8K.jsonl OUT_PREFIX`: GSM8K in the formats of train/post/.

GSM8K (Cobbe et al. 2021, arXiv:2110.14168) ships one {"question", "answer"} per line, the answer
being worked steps with calculator notes ("<<48/2=24>>") and the result after "####". This writes
    OUT_PREFIX-sft.jsonl   {"messages": [user: question, assistant: the steps and "#### N"]}
    OUT_PREFIX-rl.jsonl    {"prompt": question, "answer": "N"}   (post.checker = "answer-mark")
for configs/post/sft-gpu.toml and grpo-gpu.toml. Nothing is downloaded: give it the file from the
GSM8K repository (grade_school_math/data/train.jsonl) or a `datasets` export of openai/gsm8k.
"""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import asked_for_help, run_cli  # noqa: E402
from train.errors import ConfigError  # noqa: E402

USAGE = "usage: python scripts/gsm8k_jsonl.py GSM8K.jsonl OUT_PREFIX"
CALCULATOR = re.compile(r"<<[^>]*>>")


def convert(record: dict, where: str) -> tuple[dict, dict]:
    """(sft record, rl record) of one GSM8K line."""
    if not (isinstance(record, dict) and isinstance(record.get("question"), str)
            and isinstance(record.get("answer"), str) and "####" in record["answer"]):
        raise ConfigError(f'{where}: expected {{"question": ..., "answer": "... #### N"}}')
    steps = CALCULATOR.sub("", record["answer"])
    final = steps.rsplit("####", 1)[1].strip().replace(",", "")
    sft = {"messages": [{"role": "user", "content": record["question"]}, {"role": "assistant", "content": steps}]}
    return sft, {"prompt": record["question"], "answer": final}


def main(argv: list[str]) -> int:
    if asked_for_help(argv, __doc__, USAGE):
        return 0
    if len(argv) != 2:
        raise ConfigError(USAGE)
    src, prefix = Path(argv[0]), argv[1]
    if not src.is_file():
        raise ConfigError(f"{src}: no such file")
    outs = [Path(f"{prefix}-{kind}.jsonl") for kind in ("sft", "rl")]
    if any(p.exists() for p in outs):
        raise ConfigError(f"{' or '.join(map(str, outs))} exists; choose another OUT_PREFIX")
    pairs = []
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                raise ConfigError(f"{src}:{n}: not JSON") from None
            pairs.append(convert(record, f"{src}:{n}"))
    if not pairs:
        raise ConfigError(f"{src} holds no records")
    for path, column in zip(outs, zip(*pairs)):
        path.write_text("".join(json.dumps(r) + "\n" for r in column), encoding="utf-8")
    print(f"wrote {len(pairs)} items to {outs[0]} and {outs[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
