from uplodr.cli.main import main

main()
