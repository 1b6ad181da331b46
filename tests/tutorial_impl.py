"""An independent re-implementation of the tutorial's semantics, for bit-exact checks.

Written from the reference tutorial's equations (not its code): per step, the previous
membrane is compared to vth (strict '>') for the delayed reset, then
``mem * (1 - last) * decay + W x``; the prediction is the running sum of output spikes
divided by T. Surrogate: rectangle window |u| < 0.5, height 1.
"""

import itertools

import torch
from torch import nn


class _Rect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mem, vth):
        ctx.save_for_backward(mem, vth)
        return mem.gt(vth).float()

    @staticmethod
    def backward(ctx, g):
        mem, vth = ctx.saved_tensors
        return g * ((mem - vth).abs() < 0.5).float() / 1.0, None


class TutorialReference(nn.Module):
    def __init__(self, sizes=(784, 512, 512, 10), vth=0.4, decay=0.8):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.vth = torch.full((1,), vth)
        self.decay = torch.full((1,), decay)

    def forward(self, spikes):  # spikes [T, B, 784]
        mems = [torch.zeros(1, fc.out_features) for fc in self.fcs]
        total = 0
        for t in range(spikes.shape[0]):
            x = spikes[t]
            for i, fc in enumerate(self.fcs):
                mem = mems[i]
                last = _Rect.apply(mem, self.vth)
                mem = mem * (1 - last) * self.decay + fc(x)
                x = _Rect.apply(mem, self.vth)
                mems[i] = mem
            total = total + x
        return total / spikes.shape[0]

    def tutorial_state_dict(self):
        sd = {}
        for i, fc in enumerate(self.fcs):
            sd[f"linear_{i + 1}.weight"] = fc.weight.detach().clone()
            sd[f"linear_{i + 1}.bias"] = fc.bias.detach().clone()
        sd["vth"] = self.vth.clone()
        sd["decay"] = self.decay.clone()
        return sd
