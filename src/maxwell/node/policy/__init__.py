"""Pure policies of the node: they decide money and never touch the clock, files or the database."""
