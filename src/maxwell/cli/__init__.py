"""The `maxwell` command: one module per subcommand, wired in `main`."""
