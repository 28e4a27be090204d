"""`python -m nb2prod`."""

from .cli import main

main()
