"""``python -m lape_hub`` runs the ``lape-hub`` command."""
from lape_hub.cli import main

main()
