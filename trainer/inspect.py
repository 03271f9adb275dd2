"""``python -m trainer.inspect``: the command line's name; the tool is trainer.tools.activations."""

from trainer.common import cli
from trainer.tools.activations import FLAGS, USAGE, _main

if __name__ == "__main__":
    cli.run_tool(_main, FLAGS, USAGE)
