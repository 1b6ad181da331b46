"""``python -m snn_lab.bench [overrides]`` (see :mod:`snn_lab.cli.bench_app`)."""

if __name__ == "__main__":
    from snn_lab import cli

    cli.bench()
