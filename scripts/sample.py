#!/usr/bin/env python
"""Thin wrapper: ``python scripts/sample.py --ckpt PATH --n N --out DIR [...]`` == ``sgm sample ...``."""

import sys

from sgm_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main(["sample", *sys.argv[1:]]))
