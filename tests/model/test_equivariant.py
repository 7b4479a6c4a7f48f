"""The D4-equivariant ResNet: the group's bookkeeping, centred stride-2 grids, equivariance of
the layers, invariance of the logits on 150 x 150 images, its size, layout and weights file.

Small widths keep the forward passes fast: the symmetry does not depend on them. Tolerances
are relative to the largest logit: fp32 rounding alone gives 3e-7 to 3e-6, a grid half a pixel
off (an odd side) about 1e-1, so 1e-4 tells the two apart with room to spare.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lensing.core.constants import LAYER_GROUPS
from lensing.data.augment import d4_views
from lensing.model.equivariant import (
    DEFAULT_WIDTHS,
    GROUP_ORDER,
    INVERSE,
    PARAMETER_MATCHED_WIDTHS,
    PRODUCT,
    D4Conv,
    GroupBatchNorm,
    act,
    build_equivariant,
    centred_padding,
    feature_sizes,
)
from lensing.model.network import GROUP_MODULES, build_model, layer_groups

SIZE = 150  # the package's images
SMALL = (2, 3, 4, 5)  # fields per stage for the forward passes of these tests
RELATIVE_TOLERANCE = 1e-4


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    error = float((actual.float() - expected.float()).abs().max())
    assert error <= tolerance * scale, f"max error {error:.3g} > {tolerance:g} x {scale:.3g}"


def regroup(y: torch.Tensor, h: int) -> torch.Tensor:
    """What an equivariant map's output on ``y``'s input turns into when the input is acted
    on by ``h``: each group channel ``g`` is ``h`` applied to channel ``h^-1 g``."""
    fields = y.unflatten(1, (GROUP_ORDER, -1))
    permuted = fields[:, [PRODUCT[INVERSE[h]][g] for g in range(GROUP_ORDER)]]
    return act(permuted, h).flatten(1, 2)


def test_elements_are_d4_views_in_order_and_form_a_group():
    x = torch.rand(1, 1, 6, 6)
    for element, view in enumerate(d4_views(x)):
        assert torch.equal(act(x, element), view)
    for g in range(GROUP_ORDER):
        assert PRODUCT[0][g] == g == PRODUCT[g][0]
        assert PRODUCT[g][INVERSE[g]] == 0 == PRODUCT[INVERSE[g]][g]
        assert sorted(PRODUCT[g]) == list(range(GROUP_ORDER))
        for h in range(GROUP_ORDER):
            assert torch.equal(act(act(x, h), g), act(x, PRODUCT[g][h]))


def test_an_odd_kernel_with_stride_two_on_an_even_side_is_not_turned_with_the_image():
    """Why the stem has an 8x8 kernel: ResNet's own stride-2 layers are half a pixel off."""
    x = torch.rand(1, 1, SIZE, SIZE)
    kernel = torch.ones(1, 1, 3, 3)  # symmetric, so only the grid can break the symmetry
    off = F.conv2d(act(x, 1), kernel, stride=2, padding=1)
    assert (off - act(F.conv2d(x, kernel, stride=2, padding=1), 1)).abs().max() > 0.1
    even = torch.ones(1, 1, 8, 8)
    padding = centred_padding(SIZE, 8, 2)
    turned = F.conv2d(act(x, 1), even, stride=2, padding=padding)
    torch.testing.assert_close(turned, act(F.conv2d(x, even, stride=2, padding=padding), 1))


def test_every_stride_two_layer_gets_an_odd_side():
    assert feature_sizes(SIZE) == (75, 37, 37, 19, 9, 5)
    assert centred_padding(37, 3, 2) == 1 and centred_padding(19, 3, 2) == 0
    assert centred_padding(19, 1, 2) == -1  # the shortcut beside it crops a pixel each side
    assert centred_padding(SIZE, 3, 1) == 1


def test_the_lifting_layer_is_equivariant_on_150_pixels():
    torch.manual_seed(0)
    lifting = D4Conv(1, 3, 8, stride=2, lifting=True)
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        y = lifting(x)
        assert y.shape == (2, 3 * GROUP_ORDER, 75, 75)
        turned = lifting(torch.cat(d4_views(x))).chunk(GROUP_ORDER)  # one call: fewer waits
    for h in range(GROUP_ORDER):
        assert_close_relative(turned[h], regroup(y, h), 1e-5)


@pytest.mark.parametrize("lifting", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_filter_bank_holds_the_turned_filters_with_permuted_inputs(lifting, channels_last):
    """Output element g's filter from input element g' is g applied to the base filter from
    input element g^-1 g', for both layouts the bank is built in."""
    torch.manual_seed(7)
    conv = D4Conv(2, 3, 3, lifting=lifting)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    in_group = 1 if lifting else GROUP_ORDER
    base = conv.weight.detach().unflatten(1, (in_group, 2))  # (o, g', i, k, k)
    bank = conv.full_weight().detach().unflatten(1, (in_group, 2)).unflatten(0, (GROUP_ORDER, 3))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert conv.full_weight().is_contiguous(memory_format=layout)
    for g in range(GROUP_ORDER):
        for h in range(in_group):
            source = base[:, PRODUCT[INVERSE[g]][h] if in_group > 1 else 0]
            assert torch.equal(bank[g, :, h], act(source, g))


@pytest.mark.parametrize(
    ("kernel", "stride", "side", "out"),
    [(3, 1, 19, 19), (3, 2, 37, 19), (3, 2, 19, 9), (1, 2, 19, 9), (1, 2, 37, 19)],
)
def test_a_group_convolution_is_equivariant(kernel, stride, side, out):
    torch.manual_seed(1)
    conv = D4Conv(2, 3, kernel, stride)
    x = torch.rand(2, 2 * GROUP_ORDER, side, side)
    with torch.no_grad():
        y = conv(x)
        assert y.shape == (2, 3 * GROUP_ORDER, out, out)
        for h in range(GROUP_ORDER):
            assert_close_relative(conv(regroup(x, h)), regroup(y, h), 1e-5)


def test_group_batch_norm_shares_statistics_over_a_field_in_both_layouts():
    torch.manual_seed(2)
    norm, norm_last = GroupBatchNorm(3).double(), GroupBatchNorm(3).double()
    with torch.no_grad():
        for module in (norm, norm_last):
            module.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
            module.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    scales = torch.arange(1.0, 25.0, dtype=torch.float64).view(1, -1, 1, 1)
    x = (torch.randn(4, 3 * GROUP_ORDER, 5, 5, dtype=torch.float64) * scales).requires_grad_()
    y = norm(x)  # training mode: the batch's statistics, the native batch norm on a view
    standard = ((y.unflatten(1, (GROUP_ORDER, 3)) - norm.bias.view(1, 1, 3, 1, 1))
                / norm.weight.view(1, 1, 3, 1, 1))  # fmt: skip
    torch.testing.assert_close(standard.mean(dim=(0, 1, 3, 4)), torch.zeros(3, dtype=x.dtype))
    var = standard.var(dim=(0, 1, 3, 4), unbiased=False)
    torch.testing.assert_close(var, torch.ones(3, dtype=x.dtype), atol=1e-4, rtol=0)
    # channels_last goes through _FieldNorm: the same values, gradients and running statistics.
    x_last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y_last = norm_last(x_last)
    assert y_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_last, y)
    upstream = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, norm.weight, norm.bias), upstream)
    grads_last = torch.autograd.grad(y_last, (x_last, norm_last.weight, norm_last.bias), upstream)
    for grad, grad_last in zip(grads, grads_last, strict=True):
        torch.testing.assert_close(grad_last, grad)
    torch.testing.assert_close(norm_last.running_mean, norm.running_mean)
    torch.testing.assert_close(norm_last.running_var, norm.running_var)
    assert int(norm_last.num_batches_tracked) == int(norm.num_batches_tracked) == 1
    norm.eval(), norm_last.eval()
    torch.testing.assert_close(norm_last(x_last), norm(x))


@pytest.mark.parametrize("group_pool", ["max", "mean"])
def test_logits_are_invariant_to_the_8_turns_and_flips(group_pool):
    torch.manual_seed(3)
    model = build_equivariant(widths=SMALL, group_pool=group_pool).eval()
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():  # in eval mode the images of a batch do not meet: one call
        logits = model(torch.cat(d4_views(x))).chunk(GROUP_ORDER)
    assert logits[0].shape == (2, 3)
    for other in logits[1:]:
        assert_close_relative(other, logits[0], RELATIVE_TOLERANCE)


@pytest.mark.parametrize("side", [128, 148, 149])
def test_other_even_sides_are_exact_and_an_odd_side_is_not(side):
    """On an odd side the 8x8 stem is half a pixel off: the same check then fails by far."""
    torch.manual_seed(3)
    model = build_equivariant(widths=SMALL).eval()
    with torch.no_grad():
        logits = model(torch.cat(d4_views(torch.rand(2, 1, side, side)))).chunk(GROUP_ORDER)
    error = max(float((other - logits[0]).abs().max()) for other in logits[1:])
    relative = error / float(logits[0].abs().max())
    assert relative < RELATIVE_TOLERANCE if side % 2 == 0 else relative > 100 * RELATIVE_TOLERANCE


def test_logits_are_invariant_with_batch_statistics_too():
    """In training mode each batch norm uses the batch's statistics; turning every image of
    the batch leaves them unchanged, so the logits stay invariant."""
    torch.manual_seed(4)
    model = build_equivariant(widths=SMALL).train()
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        logits = [model(view) for view in d4_views(x)]
    for other in logits[1:]:
        assert_close_relative(other, logits[0], RELATIVE_TOLERANCE)


def test_channels_last_and_bf16_autocast_on_the_cpu():
    torch.manual_seed(5)
    model = build_equivariant(widths=SMALL).eval()
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        x_last = x.contiguous(memory_format=torch.channels_last)
        assert_close_relative(model(x_last), reference, 1e-5)
        features = model.maxpool(model.relu(model.bn1(model.conv1(x_last))))
        assert features.is_contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x_last)
    assert low.dtype == torch.bfloat16
    assert_close_relative(low, reference, 5e-2)  # bf16 keeps 8 bits of mantissa
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x_last), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_parameter_counts_against_resnet18():
    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    resnet = count(build_model("none"))  # 11.2 M
    # Default: 1.5x ResNet18's FLOPs, so about a fifth of its parameters (0.2x).
    assert 0.15 * resnet <= count(build_equivariant(widths=DEFAULT_WIDTHS)) <= 0.25 * resnet
    matched = count(build_equivariant(widths=PARAMETER_MATCHED_WIDTHS))
    assert 0.95 * resnet <= matched <= 1.05 * resnet


def test_parameters_split_into_the_layer_groups_by_attribute_name():
    model = build_equivariant(widths=SMALL)
    tops = {name.split(".", 1)[0] for name, _ in model.named_parameters()}
    assert tops == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
    groups = layer_groups(model)
    assert list(groups) == list(LAYER_GROUPS)
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(set(grouped)) == len(grouped)
    early = {id(p) for m in GROUP_MODULES["early"] for p in getattr(model, m).parameters()}
    assert {id(p) for p in groups["early"]} == early


def test_state_dict_round_trips_through_a_weights_only_file(tmp_path):
    torch.manual_seed(6)
    model = build_equivariant(widths=SMALL, num_classes=4)
    model.train()(torch.rand(2, 1, 31, 31))  # move the running statistics off their start
    path = tmp_path / "d4.pth"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert not any(key.endswith("index") for key in state)  # rebuilt, not stored
    copy = build_equivariant(widths=SMALL, num_classes=4)
    copy.load_state_dict(state)
    x = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(copy.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_build_equivariant_labels_and_checks():
    model = build_equivariant(num_classes=5, widths=SMALL)
    assert model.fc.out_features == 5 and model.fc.in_features == SMALL[-1]
    assert model.is_pretrained is False and model.weights == "none"
    with pytest.raises(ValueError, match="group_pool"):
        build_equivariant(group_pool="sum")
    with pytest.raises(ValueError, match="widths"):
        build_equivariant(widths=(1, 2, 3))
    with pytest.raises(ValueError, match="num_classes"):
        build_equivariant(num_classes=0)
