"""``python -m metrocloud.cli``."""

from metrocloud.cli import main

main()
