"""Work around PyTorch's CPU conv3d kernel choice for batch-1 inputs, for the processes of
`scripts/train_default_model.py` (VAE latent caching, evaluation, benchmarks).

PyTorch (2.13, `use_mkldnn` in aten/src/ATen/native/ConvUtils) routes a float32 conv3d with batch size 1 and a
small C*T*H input to the native `slow_conv3d` kernel; on this CPU that kernel is ~5x slower than oneDNN
(measured 0.31 s vs 0.06 s for 5 convs of (1, 16, 4, 98, 98) x (16, 16, 3, 3, 3)), and the VAE decodes one
clip at a time, so a 17-frame 96x96 decode took ~20 s instead of ~4 s. `install()` makes `nn.Conv3d` call
`torch.mkldnn_convolution` directly for float32 CPU inputs when autograd is off (outputs agree to float32
rounding, ~1e-5 relative). Training (batch >= 2, autograd on) is untouched.

The proper fix belongs in `cinegen.models.vae.CausalConv3d` (reported to the lead); this module exists so the
default model can be trained and evaluated before that lands. Usage as a launcher:

    python scripts/fast_conv3d.py -m cinegen.cli train configs/shapes-dit.yaml
"""

from __future__ import annotations

import runpy
import sys

import torch
from torch import nn
from torch.nn import functional as F

_installed = False


def _forward(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and self.weight.dtype == torch.float32
        and self.padding_mode == "zeros"
        and isinstance(self.padding, tuple)
        and x.dim() == 5
    ):
        return torch.mkldnn_convolution(
            x.contiguous(), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
        )
    return F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def install() -> None:
    """Patch `nn.Conv3d.forward` in this process (idempotent)."""
    global _installed
    if not _installed:
        nn.Conv3d.forward = _forward  # type: ignore[method-assign]
        _installed = True


if __name__ == "__main__":
    install()
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        raise SystemExit("usage: python scripts/fast_conv3d.py -m MODULE [args...]")
    mod = sys.argv[2]
    sys.argv = [mod, *sys.argv[3:]]
    runpy.run_module(mod, run_name="__main__", alter_sys=True)
