"""Writes a small torch.nn.GroupNorm block as ONNX, the way the TorchScript exporter writes it (Reshape,
InstanceNormalization, Reshape back, Mul, Add), for FuseGroupNorm.TorchExport (tests/unit/test_fuse_groupnorm.cpp).
Conv(8 -> 32, 3x3) -> GroupNorm(4, 32) -> SiLU, input x [b, 8, 16, 16] with a dynamic batch, opset 17."""
import argparse
import os

import torch


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 32, 3, padding=1)
        self.norm = torch.nn.GroupNorm(4, 32)
        with torch.no_grad():  # affine parameters other than the defaults, so that they matter
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return torch.nn.functional.silu(self.norm(self.conv(x)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, help="the .onnx file to write")
    a = p.parse_args()
    torch.manual_seed(0)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.onnx.export(Block().eval(), torch.randn(2, 8, 16, 16), a.out, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    print(a.out)


if __name__ == "__main__":
    main()
