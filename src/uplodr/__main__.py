from uplodr.cli.main import run

run()
