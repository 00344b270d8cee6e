"""`python -m slim.config list | help MODULE | generate MODULE... | analyze FILE [-o ...]`."""
import slim  # noqa: F401  (classic static IR before paddle is imported by the module packages)
from slim.config.cli import main

if __name__ == "__main__":
    main()
