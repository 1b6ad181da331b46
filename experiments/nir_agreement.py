"""How closely snnTorch and Norse reproduce a checkpoint's network from its NIR graph.

    python experiments/nir_agreement.py <run>/checkpoints/best.ckpt [--samples 1000] [--batch 100]

On the first ``--samples`` MNIST test images (the network's own encoder, seeded), prints
the share of identical values, per layer, of

* the BatchNorm-folded network (what the graph holds, imported back by snn_lab) against
  the trained one (hidden spikes; the readout layer's output), and
* each client's output (snnTorch 1.0 ``import_from_nir``, Norse 1.1 ``from_nir(dt=1e-4)``)
  against the folded network's: output spikes, or for a membrane readout the LI applied
  to the client's output of the graph that ends at the readout's current (neither
  client reads an LI node).

docs/INTEROP.md reports its output for the checkpoints named there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging

import norse.torch
import torch
from snntorch import utils as snn_utils
from snntorch.import_nir import import_from_nir

from snn_lab.data.mnist import load_mnist_arrays
from snn_lab.models import from_nir, load_network, to_nir
from snn_lab.models.nir_params import DT
from snn_lab.neurons import LI


def run_client(client: str, graph, x: torch.Tensor) -> torch.Tensor:
    with contextlib.redirect_stdout(io.StringIO()):
        module = import_from_nir(graph) if client == "snntorch" else norse.torch.from_nir(graph, dt=DT)
    if client == "snntorch":
        snn_utils.reset(module)
    outs, state = [], None
    with torch.no_grad():
        for xt in x:
            if client == "norse":
                out, state = module(xt, state)
            else:
                out, _ = module(xt)
            outs.append(out)
    return torch.stack(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # Norse logs its r != 1 warnings for IF nodes
    torch.set_num_threads(2)
    net = load_network(args.ckpt).eval()
    graph = to_nir(net)
    folded = from_nir(graph, time_steps=net.time_steps, encoder=net.encoder)
    li = isinstance(net.layers[-1].neuron, LI)
    client_graph = to_nir(net, readout_node="current") if li else graph
    images, _ = load_mnist_arrays("test")
    images = images[: args.samples].float().div(255).reshape(-1, *net.input_shape)
    gen = torch.Generator().manual_seed(args.seed)
    same: dict[str, float] = {}
    count: dict[str, int] = {}

    def add(key: str, a: torch.Tensor, b: torch.Tensor) -> None:
        same[key] = same.get(key, 0.0) + float((a == b).sum())
        count[key] = count.get(key, 0) + a.numel()

    for i in range(0, len(images), args.batch):
        x = net.encode(images[i : i + args.batch], generator=gen)
        with torch.no_grad():
            _, orig = net.forward_spikes(x, return_record=True, mode="step")
            _, fold = folded.forward_spikes(x, return_record=True, mode="step")
        for k, (a, b) in enumerate(zip(orig.spikes, fold.spikes)):
            add(f"fold vs trained, layer {k}", b, a)
        for client in ("snntorch", "norse"):
            out = run_client(client, client_graph, x)
            if li:
                decay, v, mem = folded.layers[-1].neuron.decay, torch.zeros_like(out[0]), []
                for cur in out:
                    v = v * decay + cur
                    mem.append(v)
                out = torch.stack(mem)
            add(f"{client} vs folded, output", out, fold.outputs)
    print(f"{args.ckpt}: {len(images)} test images, T={net.time_steps}, readout={net.readout}")
    for key, equal in same.items():
        n = count[key]
        print(f"  {key:32s} {equal / n:.6%} identical ({n - int(equal)} of {n} values differ)")


if __name__ == "__main__":
    main()
