"""``python -m metrocloud.cli``."""

from metrocloud.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
