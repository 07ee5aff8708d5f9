"""``python -m bot`` does what the ``waymark`` command does."""

from bot.cli import main

main()
