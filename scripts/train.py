#!/usr/bin/env python
"""Thin wrapper: ``python scripts/train.py [--config FILE] [key=value ...]`` == ``sgm train ...``."""

import sys

from sgm_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
