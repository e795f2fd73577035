"""`python -m uplodr`: the `uplodr` command. `python -m uplodr worker …` (how providers start a
worker) goes straight to the worker's command, without the rest of the CLI (`uplodr.cli.worker`).
"""

import sys

if sys.argv[1:2] == ["worker"]:
    from uplodr.cli.worker import run_worker_command

    run_worker_command(sys.argv[2:])
else:
    from uplodr.cli.main import run

    run()
