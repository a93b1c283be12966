"""``python -m batchctl`` runs the command-line interface."""

from batchctl.cli import main

if __name__ == "__main__":
    main()
