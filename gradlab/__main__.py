"""``python -m gradlab``: the same as the ``gradlab`` command (and what ``torchrun -m`` runs)."""

from gradlab.cli import main

if __name__ == "__main__":
    main()
