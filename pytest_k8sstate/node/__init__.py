"""A node: run commands in its context (exec), the network namespaces we create (netns), capture its state."""
