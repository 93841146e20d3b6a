"""The command line: argparse -> options -> the same functions the Python API calls."""
