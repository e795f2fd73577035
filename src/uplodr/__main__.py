"""`python -m uplodr`: the `uplodr` command (`uplodr.cli.entry`)."""

from uplodr.cli.entry import run

run()
