"""A ResNet of D4 group convolutions: logits that do not change when the image is turned by
90 degrees or flipped, by construction rather than by augmentation.

A lensing image has no preferred orientation, so the classifier should give the same answer
for all 8 images of the dihedral group D4 (4 turns by 90 degrees, each unflipped and flipped;
``lensing.data.augment.d4_views`` lists them in the order used here: element ``4 * flipped +
turns``). A group-equivariant network (Cohen & Welling, "Group Equivariant Convolutional
Networks", 2016) gets this exactly:

- the lifting convolution (``conv1``) applies each of its filters in its 8 turned/flipped
  copies, so one input channel gives ``C`` *fields* of 8 group channels each;
- a group convolution (``C`` fields -> ``C'`` fields) gives output element ``g`` the filter
  turned/flipped by ``g`` with its input group axis permuted by ``g``'s inverse;
- ``GroupBatchNorm`` shares its statistics and affine parameters over the 8 channels of a field;
- after the last stage, a maximum (or mean) over the group axis and an average over space
  leave features, and so logits, that are invariant.

Turning the input by ``h`` then turns every feature map by ``h`` and permutes its group axis
(``out[g] -> h(out[h^-1 g])``): equivariance inside, invariance at the head.

Layout: the group channels of a layer are stored group-major, channel ``g * C + c``, so that
on a contiguous tensor the fields are the channel axis of a view, (N * 8, C, H * W), and the
batch norm over fields is one native batch norm; on a channels_last tensor that view is slow
for small C, and ``_FieldNorm`` pools native per-channel statistics instead.

Exactness and sizes. Turning commutes with a convolution only if its sampling grid is
centred on the image: a stride-2 layer with kernel ``k`` and padding ``p`` on ``n`` pixels is
centred iff ``n + 2p - k`` is even. ResNet18's 7x7 stride-2 stem on 150 pixels, and any odd
kernel with stride 2 on an even side, is off by half a pixel; cropping or padding 150 to an
odd size (149, 151) does not help, since a one-sided crop is not turned with the image. So:

- the stem is an 8x8 lifting convolution with stride 2 (an even kernel on an even side is
  centred): 150 -> 75;
- every later stride-2 layer (the 3x3 max pool, the first 3x3 convolution of a stage and the
  1x1 shortcut beside it) picks, from the input size, the padding of its two centred choices
  that keeps the output odd, so the next stride-2 layer is centred too (``centred_padding``;
  a 1x1 shortcut's "padding -1" crops one pixel each side). On 150 x 150 inputs the maps are
  75, 37, 37, 19, 9 and 5 pixels wide (ResNet18: 75, 38, 38, 19, 10, 5); every pixel is
  still read by some kernel of each layer.

Exact for square inputs of even side (the package's 150 x 150); for an odd side the stem is
half a pixel off and the invariance holds only approximately. In floating point the 8 logits
differ by rounding only (about 1e-6 of their size in fp32; see tests/model).

Size. A group convolution with ``C`` input and ``C'`` output fields has ``8 C C'`` weights per
tap but computes like a plain convolution of ``8 C`` to ``8 C'`` channels, ``64 C C'``
multiply-adds: parameters and compute cannot both match ResNet18's. Matching its 11.2 M
parameters (widths / sqrt(8): ``PARAMETER_MATCHED_WIDTHS``) costs 7.5x its forward FLOPs;
matching its FLOPs (widths / 8) leaves an eighth of the parameters. ``DEFAULT_WIDTHS``
(10, 20, 40, 80 fields: 80 to 640 group channels, 1.25x ResNet18's, multiples of 16 as bf16
matrix units like) sits in between: 2.18 M parameters (0.2x), 2.47 GFLOP forward per
150 x 150 image (1.5x), a training step 1.4-1.7x ResNet18's time per image in bf16 and
1.4-1.6x in fp32 (``benchmarks.backbone_speed``, 2-core Xeon with AMX). The first widths, (12,
24, 48, 96), cost 1.5-2.6x (bf16) and 2.1-2.5x (fp32), and learned less from random weights
(docs/benchmarks.md); their checkpoints still load (``widths_of``).

Cost of the weights. The full filter bank (8x the parameters) is rebuilt from the base weights
by one gather at every forward pass (in bf16 under autocast) and its gradient scattered back,
so the weights stay tied exactly: a few percent of a training step on the CPU (profiled).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lensing.core.constants import CLASSES

GROUP_ORDER = 8  # elements of D4: 4 turns x {unflipped, flipped}
STEM_KERNEL = 8  # even, so that the stride-2 stem is centred on an even side (150)
# Fields (group channels / 8) of layer1..layer4. ResNet18's widths are 64, 128, 256, 512.
DEFAULT_WIDTHS = (10, 20, 40, 80)  # 1.5x ResNet18's FLOPs, 0.2x its parameters
PARAMETER_MATCHED_WIDTHS = (23, 45, 91, 181)  # ResNet18's parameters, 7.5x its FLOPs
GROUP_POOLS = ("max", "mean")


def act(x: Tensor, element: int) -> Tensor:
    """Element ``element`` of D4 applied to the last two axes of ``x``: ``element // 4`` left-
    right flips, then ``element % 4`` turns by 90 degrees (``torch.rot90``), as ``d4_views``."""
    flipped, turns = divmod(element, 4)
    if flipped:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def _cayley_table() -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """(product, inverse): ``act(act(x, h), g) == act(x, product[g][h])`` and
    ``product[g][inverse[g]] == 0``, found by acting on a 3x3 grid of distinct values (no
    element but the identity leaves it unchanged, so each composition is identified)."""
    probe = torch.arange(9.0).view(3, 3)
    images = [act(probe, element) for element in range(GROUP_ORDER)]

    def which(image: Tensor) -> int:
        return next(k for k, other in enumerate(images) if torch.equal(image, other))

    product = tuple(
        tuple(which(act(images[h], g)) for h in range(GROUP_ORDER)) for g in range(GROUP_ORDER)
    )
    inverse = tuple(row.index(0) for row in product)
    return product, inverse


PRODUCT, INVERSE = _cayley_table()


def centred_padding(size: int, kernel: int, stride: int) -> int:
    """Padding for a layer with ``kernel`` and ``stride`` (1 or 2) on ``size`` pixels whose
    sampling grid is centred on the input, so that it commutes with turns and flips.

    Stride 1: ``(kernel - 1) // 2`` (centred for odd kernels). Stride 2: centred iff
    ``size - kernel`` is even; of the two centred paddings ``kernel // 2`` and ``kernel // 2
    - 1`` the one giving an odd output (so the next stride-2 layer can be centred as well); a
    negative padding means cropping. When no padding is centred (``size - kernel`` odd) the
    usual ``(kernel - 1) // 2``.
    """
    if stride not in (1, 2):
        raise ValueError(f"only strides 1 and 2 are supported; got {stride}")
    if stride == 1 or (size - kernel) % 2:
        return (kernel - 1) // 2
    padding = kernel // 2
    return padding if (size + 2 * padding - kernel) % 4 == 0 else padding - 1


def feature_sizes(size: int) -> tuple[int, ...]:
    """Side of the feature maps after the stem, the max pool and each of the 4 stages, for a
    square input of side ``size`` (150 -> 75, 37, 37, 19, 9, 5)."""
    sizes = []
    for kernel, stride in ((STEM_KERNEL, 2), (3, 2), (3, 1), (3, 2), (3, 2), (3, 2)):
        padding = centred_padding(size, kernel, stride)
        size = (size + 2 * padding - kernel) // stride + 1
        sizes.append(size)
    return tuple(sizes)


def _filter_index(in_group: int, in_fields: int, kernel: int) -> Tensor:
    """Index into the flattened base filter of one output field, for each of the 8 output
    elements ``g``: tap ``(g', i, s)`` of copy ``g`` reads tap ``(g^-1 g', i, g(s))`` of the
    base filter. Shape (8, in_group * in_fields * kernel**2)."""
    taps = kernel * kernel
    spatial = torch.stack(
        [act(torch.arange(taps).view(kernel, kernel), g).flatten() for g in range(GROUP_ORDER)]
    )  # (8, taps): source tap of each tap
    if in_group == 1:  # lifting: the input has no group axis to permute
        source_element = torch.zeros(GROUP_ORDER, 1, dtype=torch.long)
    else:
        source_element = torch.tensor(
            [[PRODUCT[INVERSE[g]][h] for h in range(GROUP_ORDER)] for g in range(GROUP_ORDER)]
        )
    channel = source_element[:, :, None] * in_fields + torch.arange(in_fields)  # (8, G, I)
    index = channel[:, :, :, None] * taps + spatial[:, None, None, :]  # (8, G, I, taps)
    return index.reshape(GROUP_ORDER, -1)


class D4Conv(nn.Module):
    """A bias-free D4 convolution from ``in_fields`` fields (``lifting``: from plain
    channels) to ``out_fields`` fields of 8 group channels, with a centred sampling grid.

    ``weight`` (out_fields, in_group * in_fields, k, k) is the filter bank of the identity
    element's output channels, in the input's group-major channel order (in_group: 1 when
    lifting, else 8); the other 7 elements' filters are built from it at every call.
    """

    def __init__(
        self, in_fields: int, out_fields: int, kernel: int, stride: int = 1, lifting: bool = False
    ) -> None:
        super().__init__()
        in_group = 1 if lifting else GROUP_ORDER
        self.out_fields, self.kernel, self.stride = out_fields, kernel, stride
        self.lifting = lifting
        self.weight = nn.Parameter(torch.empty(out_fields, in_group * in_fields, kernel, kernel))
        # fan_in of the weight as shaped is that of each full-bank output channel, so this is
        # He initialization of the convolution actually computed.
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")
        index = _filter_index(in_group, in_fields, kernel)
        self.register_buffer("index", index.flatten(), persistent=False)

    def full_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The (8 * out_fields, in_channels, k, k) filter bank, output channel ``g * out_fields
        + o``: one gather of the base weights (cast to ``dtype`` first), differentiable.

        It is laid out like the base weight: channels_last after ``model.to(memory_format=
        torch.channels_last)`` (as ``prepare_model`` does), which makes the convolution's output
        channels_last even where its input, the one-channel image, has no layout of its own.
        """
        base = self.weight if dtype is None else self.weight.to(dtype)
        fields, in_channels, k = self.out_fields, self.weight.shape[1], self.kernel
        # Gathered as rows of the transposed weights, each a contiguous run of ``fields``
        # values: 2-4x faster than gathering single values along the rows.
        rows = base.reshape(fields, -1).t().contiguous().index_select(0, self.index)
        copies = rows.view(GROUP_ORDER, in_channels, k, k, fields)
        if k > 1 and self.weight.stride(1) == 1:  # channels_last (a contiguous one has k * k)
            bank = copies.permute(0, 4, 2, 3, 1).reshape(GROUP_ORDER * fields, k, k, in_channels)
            return bank.permute(0, 3, 1, 2)
        return copies.permute(0, 4, 1, 2, 3).reshape(GROUP_ORDER * fields, in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        pad_h, pad_w = (centred_padding(n, self.kernel, self.stride) for n in x.shape[-2:])
        if min(pad_h, pad_w) < 0:  # a 1x1 shortcut beside a 3x3 convolution without padding
            crop_h, crop_w = max(-pad_h, 0), max(-pad_w, 0)
            x = x[..., crop_h : x.shape[-2] - crop_h, crop_w : x.shape[-1] - crop_w]
            pad_h, pad_w = max(pad_h, 0), max(pad_w, 0)
        return F.conv2d(x, self.full_weight(dtype), stride=self.stride, padding=(pad_h, pad_w))

    def extra_repr(self) -> str:
        inputs = self.weight.shape[1]
        source = f"{inputs} channels" if self.lifting else f"{inputs // GROUP_ORDER} fields"
        return f"{source} -> {self.out_fields} fields, kernel {self.kernel}, stride {self.stride}"


class _FieldNorm(torch.autograd.Function):
    """Training-mode batch norm with one mean and variance per field (its 8 group channels
    pooled), for a tensor of any layout: the passes over the data are native per-channel kernels
    (statistics, normalization, the backward's sums), the pooling over the 8 channels is done
    on their small per-channel results. Returns (y, field mean, field biased variance)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float):
        fields = weight.numel()
        mean_c, var_c = (
            s.to(weight.dtype) for s in torch.batch_norm_update_stats(x, None, None, 0)
        )
        mean_c, var_c = mean_c.view(GROUP_ORDER, fields), var_c.view(GROUP_ORDER, fields)
        mean = mean_c.mean(0)
        var = var_c.mean(0) + (mean_c - mean).square().mean(0)  # no cancellation
        y = torch.batch_norm(
            x, *(t.repeat(GROUP_ORDER) for t in (weight, bias, mean, var)), False, 0.0, eps, False
        )
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy: Tensor, *_: Tensor):
        x, weight, mean, var = ctx.saved_tensors
        fields, invstd = weight.numel(), torch.rsqrt(var + ctx.eps)
        mean8, var8 = mean.repeat(GROUP_ORDER), var.repeat(GROUP_ORDER)
        # Per channel: sum(dy * x_hat) and sum(dy), x_hat with the field statistics.
        weight8, invstd8 = weight.repeat(GROUP_ORDER), invstd.repeat(GROUP_ORDER)
        sums = torch.ops.aten.native_batch_norm_backward(
            dy, x, weight8, None, None, mean8, invstd8, True, ctx.eps, [False, True, True]
        )
        _, dyx, dy_sum = sums
        dyx, dy_sum = dyx.view(GROUP_ORDER, fields).sum(0), dy_sum.view(GROUP_ORDER, fields).sum(0)
        dx = None
        if ctx.needs_input_grad[0]:
            count, scale = x.numel() // fields, weight * invstd

            def per_channel(t: Tensor) -> Tensor:
                return t.repeat(GROUP_ORDER).view(1, -1, 1, 1).to(x.dtype)

            # dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means over the field.
            x_hat = torch.batch_norm(x, None, None, mean8, var8, False, 0.0, ctx.eps, False)
            shift, slope = per_channel(-scale * dy_sum / count), per_channel(-scale * dyx / count)
            dx = torch.addcmul(shift, x_hat, slope)
            dx.addcmul_(dy, per_channel(scale))
        return dx, dyx, dy_sum, None


class GroupBatchNorm(nn.BatchNorm1d):
    """Batch norm of ``num_features`` fields: one mean, variance, scale and shift per field,
    shared by its 8 group channels (per-channel statistics would break the equivariance in
    training mode). Same parameter and buffer names as ``nn.BatchNorm2d``.

    Evaluation: one native batch norm with the field's values repeated per channel. Training:
    on a contiguous tensor the group-major layout makes the fields the channel axis of a view,
    (N * 8, C, H * W), for the native batch norm; on a channels_last one, where such a view
    has C innermost and the native kernel is slow for small C (3-5x), ``_FieldNorm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        n, channels = x.shape[:2]
        fields = self.num_features
        if channels != GROUP_ORDER * fields:
            raise ValueError(f"expected {GROUP_ORDER * fields} channels; got {channels}")
        if not self.training:
            stats = (self.running_mean, self.running_var, self.weight, self.bias)
            repeated = (t.repeat(GROUP_ORDER) for t in stats)
            return F.batch_norm(x, *repeated, training=False, eps=self.eps)
        if x.is_contiguous():
            return super().forward(x.view(n * GROUP_ORDER, fields, -1)).view_as(x)
        y, mean, var = _FieldNorm.apply(x, self.weight, self.bias, self.eps)
        count = x.numel() // fields
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:  # a cumulative average, as nn.BatchNorm2d
            momentum = 1.0 / float(self.num_batches_tracked)
        with torch.no_grad():
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * count / max(count - 1, 1), momentum)
        return y


class CentredMaxPool(nn.Module):
    """ResNet's 3x3 stride-2 max pool with the centred padding (``centred_padding``)."""

    def forward(self, x: Tensor) -> Tensor:
        padding = tuple(centred_padding(n, 3, 2) for n in x.shape[-2:])
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=padding)


class D4BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 convolutions and a shortcut) in group convolutions."""

    def __init__(self, in_fields: int, out_fields: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = D4Conv(in_fields, out_fields, 3, stride)
        self.bn1 = GroupBatchNorm(out_fields)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = D4Conv(out_fields, out_fields, 3)
        self.bn2 = GroupBatchNorm(out_fields)
        self.downsample = None
        if stride != 1 or in_fields != out_fields:
            self.downsample = nn.Sequential(
                D4Conv(in_fields, out_fields, 1, stride), GroupBatchNorm(out_fields)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class D4ResNet(nn.Module):
    """ResNet18's shape (stem, max pool, 4 stages of 2 basic blocks, the second to fourth
    halving the size, a linear head) in D4 group convolutions, for (N, 1, H, W) images.

    Top-level attributes are torchvision ResNet's (``conv1``, ``bn1``, ``layer1``..``layer4``,
    ``fc``), so ``lensing.model.network.layer_groups`` splits the parameters unchanged.
    group_pool: "max" or "mean" over the 8 group channels of each field, before the average
    over space. The features are ``widths[-1]`` invariant values per image.
    """

    def __init__(
        self,
        num_classes: int = len(CLASSES),
        widths: tuple[int, int, int, int] = DEFAULT_WIDTHS,
        group_pool: str = "max",
    ) -> None:
        super().__init__()
        if group_pool not in GROUP_POOLS:
            raise ValueError(f"unknown group_pool {group_pool!r}; expected one of {GROUP_POOLS}")
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive field counts; got {widths!r}")
        self.widths, self.group_pool = tuple(widths), group_pool
        self.conv1 = D4Conv(1, widths[0], STEM_KERNEL, stride=2, lifting=True)
        self.bn1 = GroupBatchNorm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = CentredMaxPool()
        stages, previous = [], widths[0]
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            stages.append(
                nn.Sequential(D4BasicBlock(previous, width, stride), D4BasicBlock(width, width))
            )
            previous = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(widths[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The (N, widths[-1]) invariant features of (N, 1, H, W) images."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        fields = x.unflatten(1, (GROUP_ORDER, -1))  # (N, 8, C, h, w): a view in either layout
        pooled = fields.amax(dim=1) if self.group_pool == "max" else fields.mean(dim=1)
        return pooled.mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def widths_of(weights: Mapping[str, Tensor]) -> tuple[int, int, int, int]:
    """The fields per stage of the ``D4ResNet`` whose state dict ``weights`` is (the output
    fields of each stage's first convolution); ``DEFAULT_WIDTHS`` when it holds none, so that
    loading it fails with the usual missing-keys error."""
    keys = [f"layer{stage}.0.conv1.weight" for stage in range(1, 5)]
    if not all(key in weights for key in keys):
        return DEFAULT_WIDTHS
    return tuple(int(weights[key].shape[0]) for key in keys)


def build_equivariant(
    num_classes: int = len(CLASSES),
    widths: tuple[int, int, int, int] = DEFAULT_WIDTHS,
    group_pool: str = "max",
) -> D4ResNet:
    """A randomly initialized ``D4ResNet`` labelled like ``build_model``'s networks
    (``is_pretrained`` False, ``weights`` "none"): no pretrained D4 weights exist."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes!r}")
    model = D4ResNet(num_classes, widths, group_pool)
    model.is_pretrained, model.weights = False, "none"
    return model
