"""The `mdyn` command line; the entry point is `dynamics.cli.app:entry`."""
