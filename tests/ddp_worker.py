"""Run by tests/test_ddp.py under torchrun: `axl train` for the given flags, then every rank writes
the weights it holds (rank 0 alone writes the model directory, so it cannot show the ranks agree)."""

from __future__ import annotations

import sys

from safetensors.torch import save_file

from multiscale_transformer.cli import build_parser
from multiscale_transformer.commands.train import settings
from multiscale_transformer.training.trainer import Trainer


def main(argv: list[str]) -> None:
    trainer = Trainer(settings(build_parser().parse_args(["train", *argv])))
    trainer.run()
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(trainer.s.out / f"rank{trainer.dist.rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1:])
