"""``python -m snn_lab.eval ckpt_path=... [overrides]``: the ``snn-eval`` command (see
:func:`snn_lab.cli.evaluate`)."""

if __name__ == "__main__":
    from snn_lab.cli import evaluate

    evaluate()
