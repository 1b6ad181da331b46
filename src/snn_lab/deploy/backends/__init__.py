"""Built-in backends; importing this package registers them.

=============  ========================================================================
``eager``      PyTorch runs the step module as is (the reference)
``torchscript``  ``torch.jit.trace`` + freeze, saved as ``step.torchscript.pt``
``onnxruntime``  ONNX export (``torch.export``-based, dynamic batch) + ONNX Runtime
               session, state kept in bound buffers; execution providers selectable
``aoti``       ``torch.export`` + AOTInductor: the step compiled to C++ in a ``.pt2``
``nir``        NIR export (Affine + LIF, exact mapping of the tutorial's LIF), read back with
               nirtorch and run from the file
``sparse``     a C kernel built for this network: binary inputs as index lists,
               gather-accumulate of weight rows, fused LIF update, in-kernel encoding
``lynxi``      the Lynxi KA200 path: load/save graph, lyngor compile, LynSDK runtime
               (needs the Lynxi SDK; see docs/DEPLOY.md)
=============  ========================================================================
"""

from . import aoti, eager, lynxi, nir, onnxruntime, sparse, torchscript  # noqa: F401
from .base import Backend, CompiledStep

__all__ = ["Backend", "CompiledStep"]
