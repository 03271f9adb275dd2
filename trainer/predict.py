"""``python -m trainer.predict``: the command line's name; the tool is trainer.tools.predict."""

from trainer.common import cli
from trainer.tools.predict import FLAGS, USAGE, _main

if __name__ == "__main__":
    cli.run_tool(_main, FLAGS, USAGE)
