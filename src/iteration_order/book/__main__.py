"""`python -m iteration_order.book`: the book's command line (`cli`)."""
from .cli import main

main()
