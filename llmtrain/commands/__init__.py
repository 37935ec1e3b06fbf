"""CLI subcommands: ``register(subparsers)`` defines arguments, ``run(args)`` does the work."""
