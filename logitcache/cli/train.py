"""``logitcache train --cache CACHE --student tiny|small|PATH --out DIR [--loss ...]
[--cross-tokenizer uld|gold] [--steps N | --epochs N] [--resume]``; under torchrun, every rank runs this same command."""

from __future__ import annotations

import argparse
import json
import logging

from logitcache.cli.config_flags import add_config_flags
from logitcache.cli.config_flags import config_from_args as _from_args

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    """The flags of :class:`~logitcache.train.TrainConfig` and its ``loss`` section."""
    from logitcache.train.config import TrainConfig

    add_config_flags(p, TrainConfig)


def config_from_args(args: argparse.Namespace):
    from logitcache.train.config import TrainConfig

    # A cross-tokenizer student needs its own CE: --alpha not given means 0.5 there.
    unset = {"loss.alpha": 0.5} if args.cross_tokenizer else None
    return _from_args(TrainConfig, args, unset=unset)


def run(args: argparse.Namespace) -> int:
    from logitcache.train import train

    result = train(config_from_args(args))
    print(json.dumps(result))
    return 0
