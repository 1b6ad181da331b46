"""``python -m snn_lab.deploy [overrides]`` (see :mod:`snn_lab.cli.deploy_app`)."""

if __name__ == "__main__":
    from snn_lab import cli

    cli.deploy()
