"""Allow ``python -m velocity_pg``."""

from velocity_pg.cli import main

if __name__ == "__main__":
    main()
