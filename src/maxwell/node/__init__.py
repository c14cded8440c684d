"""The node: the daemon that runs agents as real processes and clears the market every tick.

- `facade`: the `Node` protocol and the value types the API, the CLI, metrics and `top` use;
  the one contract between the daemon and everything that talks to it.
"""
