#!/usr/bin/env python
"""Thin wrapper: ``python scripts/fid.py --samples DIR --ref REF [...]`` == ``sgm fid ...``."""

import sys

from sgm_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main(["fid", *sys.argv[1:]]))
