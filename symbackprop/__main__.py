"""``python -m symbackprop``: the same command line as ``symbackprop``."""

from symbackprop.cli import main

main(prog_name="symbackprop")
