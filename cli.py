"""The command line: `python cli.py --help` (the commands live in twoyes/cli/)."""

from twoyes.cli import cli

if __name__ == "__main__":
    cli()
