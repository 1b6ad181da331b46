"""``python -m snn_lab.train [overrides]`` (see :mod:`snn_lab.cli.train_entry`)."""

if __name__ == "__main__":
    from snn_lab.cli import train

    train()
