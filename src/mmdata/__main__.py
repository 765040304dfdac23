"""``python -m mmdata`` runs the command-line interface."""

from mmdata.cli import main

if __name__ == "__main__":
    main()
