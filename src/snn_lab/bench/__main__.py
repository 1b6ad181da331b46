"""``python -m snn_lab.bench [overrides]`` (see :mod:`snn_lab.cli.bench`)."""

if __name__ == "__main__":
    from snn_lab import cli

    cli.bench()
