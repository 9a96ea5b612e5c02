"""``python -m iteration_order.book ...``: the book's command line (see `runner`)."""
from .runner import main

main()
