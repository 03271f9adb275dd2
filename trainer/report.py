"""``python -m trainer.report``: the command line's name; the tool is trainer.tools.report."""

from trainer.common import cli
from trainer.tools.report import FLAGS, USAGE, _main

if __name__ == "__main__":
    cli.run_tool(_main, FLAGS, USAGE)
