"""Subcommands of the ``sgm`` command line (see :mod:`sgm_lightning.cli`)."""
