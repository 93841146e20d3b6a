"""The command line: argparse -> ``SweepOptions`` -> ``api.sweep``, the function ``ray_ban.run`` calls too."""
