"""Image-to-image networks: the pix2pix U-Net with skip connections plus 1x1 heads (no ``bpy``).

Structure follows pytorch-CycleGAN-and-pix2pix ``models/networks.py``: helpers first
(:func:`get_norm_layer`, :func:`init_weights`, :func:`define_net` picking a network by name and
raising on unknown names), then the classes; the U-Net is built recursively from
:class:`UnetSkipConnectionBlock`.

Two networks, one per output (Sela et al. 2017, supplement):

``geometry``
    input: RGB crop, float (B, 3, R, R) in [-1, 1]; output (B, 4, R, R): channels 0..2 are the
    label-frame ``xyz`` divided by :data:`XYZ_SCALE_MM` (so multiply by it for millimetres),
    channel 3 is the face-mask logit.
``correspondence``
    input as above; output (B, 3, R, R): canonical correspondence, nominally in [0, 1].

The paper's encoder is C64-C128-C256-C512-C512-C512-C512-C512 at 256 px; here the width
(``ngf``), the channel cap (``max_channels``) and the number of down-samplings (``num_downs``,
default ``log2(R)`` so the bottleneck is 1x1) are parameters, chosen by measurement
(``scripts/bench_networks.py``, docs/reference/networks.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn
from torch.nn import init

__all__ = [
    "NET_OUTPUTS",
    "XYZ_SCALE_MM",
    "UnetGenerator",
    "UnetSkipConnectionBlock",
    "ImageToMapNet",
    "define_net",
    "get_norm_layer",
    "init_weights",
    "default_num_downs",
]

# Network output units: xyz channels are millimetres / XYZ_SCALE_MM (about -1..1 for a face).
XYZ_SCALE_MM = 100.0

# widths of the 1x1 head convolutions before the output one (the paper's C*64-C*32)
HEAD_CHANNELS = (64, 32)

# name -> number of output channels
NET_OUTPUTS = {"geometry": 4, "correspondence": 3}


# --------------------------------------------------------------------------------------- helpers
def get_norm_layer(norm_type: str = "batch"):
    """Return a normalisation layer factory: 'batch', 'instance' or 'none'."""
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm_type == "none":
        return lambda _c: nn.Identity()
    raise NotImplementedError(f"normalization layer [{norm_type}] is not found; use batch, instance or none")


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """Initialise conv weights N(0, gain) (pix2pix default) and norm weights N(1, gain)."""

    def init_func(m):
        classname = m.__class__.__name__
        if hasattr(m, "weight") and (classname.find("Conv") != -1 or classname.find("Linear") != -1):
            if init_type == "normal":
                init.normal_(m.weight.data, 0.0, init_gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight.data, gain=init_gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight.data, a=0, mode="fan_in")
            else:
                raise NotImplementedError(f"initialization method [{init_type}] is not implemented")
            if getattr(m, "bias", None) is not None:
                init.constant_(m.bias.data, 0.0)
        elif classname.find("BatchNorm2d") != -1:
            init.normal_(m.weight.data, 1.0, init_gain)
            init.constant_(m.bias.data, 0.0)

    net.apply(init_func)
    return net


def default_num_downs(resolution: int) -> int:
    """log2(resolution): the number of stride-2 convolutions that bring R down to 1x1."""
    n = int(round(math.log2(resolution)))
    if 2**n != resolution:
        raise ValueError(f"resolution must be a power of two (got {resolution}); use 64, 128, 256 ...")
    return n


def define_net(
    name: str,
    resolution: int = 128,
    ngf: int = 32,
    max_channels: int = 256,
    num_downs: int | None = None,
    norm: str = "batch",
    use_dropout: bool = True,
    init_type: str = "normal",
    init_gain: float = 0.02,
) -> ImageToMapNet:
    """Create a network by name ('geometry' or 'correspondence'); raises on unknown names.

    Parameters
    ----------
    name : str
        'geometry' (xyz + mask logit, 4 channels) or 'correspondence' (3 channels).
    resolution : int
        Input side in pixels (power of two); sets ``num_downs`` unless given.
    ngf : int
        Channels of the first encoder layer (the paper: 64).
    max_channels : int
        Channel cap of the deeper layers (the paper: 512).
    """
    if name not in NET_OUTPUTS:
        raise NotImplementedError(f"network [{name}] is not recognized; choose from {sorted(NET_OUTPUTS)}")
    if num_downs is None:
        num_downs = default_num_downs(resolution)
    if resolution % (2**num_downs):
        raise ValueError(f"resolution {resolution} is not divisible by 2**num_downs = {2**num_downs}")
    net = ImageToMapNet(
        input_nc=3,
        output_nc=NET_OUTPUTS[name],
        num_downs=num_downs,
        ngf=ngf,
        max_channels=max_channels,
        norm_layer=get_norm_layer(norm),
        use_dropout=use_dropout,
    )
    init_weights(net, init_type, init_gain)
    # The 1x1 heads have no normalisation: N(0, 0.02) would shrink the output by ~10x per layer
    # and stall regression at start-up, so they keep PyTorch's default (Kaiming-uniform) init.
    for m in net.head:
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    return net


# --------------------------------------------------------------------------------------- classes
class UnetSkipConnectionBlock(nn.Module):
    """A U-Net level: down-sample, the submodule, up-sample, concatenate the skip.

    X -------------------identity---------------------- X
      |-- downsampling -- |submodule| -- upsampling --|
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm_layer=nn.BatchNorm2d,
        use_dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        use_bias = not isinstance(norm_layer, functools.partial) or norm_layer.func is nn.InstanceNorm2d
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)
        down: list[nn.Module]
        up: list[nn.Module]
        model: list[nn.Module]
        if not innermost and submodule is None:
            raise ValueError("a non-innermost U-Net block needs a submodule")
        sub: nn.Module = submodule if submodule is not None else nn.Identity()

        if outermost:
            # Features for the 1x1 heads (no tanh: the heads regress unbounded values).
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            down = [downconv]
            up = [uprelu, upconv]
            model = [*down, sub, *up]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            down = [downrelu, downconv]
            up = [uprelu, upconv, upnorm]
            model = [*down, *up]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            down = [downrelu, downconv, downnorm]
            up = [uprelu, upconv, upnorm]
            if use_dropout:
                up = up + [nn.Dropout(0.5)]
            model = [*down, sub, *up]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net: ``num_downs`` stride-2 levels with channels ``ngf * 2**i`` capped at
    ``max_channels``; dropout in the three decoder blocks next to the innermost one.

    Input (B, input_nc, R, R) -> output (B, output_nc, R, R) features (no activation).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        max_channels: int = 512,
        norm_layer=nn.BatchNorm2d,
        use_dropout: bool = True,
    ):
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2 (got {num_downs})")
        ch = [min(ngf * 2**i, max_channels) for i in range(num_downs)]
        self.channels = ch
        n = num_downs
        block = UnetSkipConnectionBlock(ch[n - 2], ch[n - 1], innermost=True, norm_layer=norm_layer)
        for i in range(n - 2, 0, -1):
            dropout = use_dropout and (n - 1 - i) <= 3  # the three blocks next to the innermost
            block = UnetSkipConnectionBlock(
                ch[i - 1], ch[i], submodule=block, norm_layer=norm_layer, use_dropout=dropout
            )
        self.model = UnetSkipConnectionBlock(
            output_nc, ch[0], input_nc=input_nc, submodule=block, outermost=True, norm_layer=norm_layer
        )

    def forward(self, x):
        return self.model(x)


class ImageToMapNet(nn.Module):
    """U-Net (its last layer gives ``ngf`` features) followed by three 1x1 convolutions,
    C*64-C*32-C*out as in the paper, whatever ``ngf`` (narrower heads starve the mask logit:
    with ngf=16, a 16-8-4 head left the mask loss at chance while xyz took all 8 features).

    forward: (B, 3, R, R) float in [-1, 1] -> (B, output_nc, R, R) float32.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        max_channels: int = 512,
        norm_layer=nn.BatchNorm2d,
        use_dropout: bool = True,
    ):
        super().__init__()
        self.unet = UnetGenerator(input_nc, ngf, num_downs, ngf, max_channels, norm_layer, use_dropout)
        h1, h2 = HEAD_CHANNELS
        self.head = nn.Sequential(
            nn.ReLU(True),
            nn.Conv2d(ngf, h1, 1),
            nn.ReLU(True),
            nn.Conv2d(h1, h2, 1),
            nn.ReLU(True),
            nn.Conv2d(h2, output_nc, 1),
        )

    def forward(self, x):
        return self.head(self.unet(x))


def image_to_tensor(images) -> torch.Tensor:
    """uint8 (B, R, R, 3) or (R, R, 3) array/tensor -> float32 (B, 3, R, R) in [-1, 1]."""
    t = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 RGB (got {t.dtype})")
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"images must be (B, R, R, 3) or (R, R, 3) (got {tuple(t.shape)})")
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
