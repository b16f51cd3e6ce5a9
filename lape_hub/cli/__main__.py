"""``python -m lape_hub.cli`` runs the ``lape-hub`` command."""
from lape_hub.cli import main

main()
