import sys

from edgert.serve.cli import build_parser, main

sys.exit(main(build_parser().parse_args()))
