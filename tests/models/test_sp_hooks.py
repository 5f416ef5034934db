"""HookSet undoes exactly what was installed; call_arg / with_call_arg handle both call styles."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ringsp.models.sp_hooks import HookSet, call_arg, with_call_arg


def test_hookset_removes_hooks_and_restores_attributes():
    lin = torch.nn.Linear(3, 3)
    x = torch.randn(2, 3)
    ref = lin(x)
    hooks = HookSet()
    hooks.add_handle(lin.register_forward_hook(lambda m, a, out: out * 2))
    marker = object()
    lin.tag = "original"
    hooks.swap_attr(lin, "tag", marker)
    hooks.swap_attr(lin, "tag", "second")  # swapped twice: remove() must restore the first value
    assert torch.allclose(lin(x), 2 * ref)
    hooks.remove()
    assert torch.equal(lin(x), ref)
    assert lin.tag == "original"
    assert not lin._forward_hooks
    hooks.remove()  # idempotent


@given(st.integers(0, 3), st.booleans())
def test_call_arg_round_trip(index, by_keyword):
    names = ["a", "b", "c", "d"]
    values = list(range(10, 14))
    if by_keyword:
        args, kwargs = tuple(values[:index]), dict(zip(names[index:], values[index:]))
    else:
        args, kwargs = tuple(values), {}
    assert call_arg(args, kwargs, index, names[index]) == values[index]
    new_args, new_kwargs = with_call_arg(args, kwargs, index, names[index], -1)
    assert call_arg(new_args, new_kwargs, index, names[index]) == -1
    others = [call_arg(new_args, new_kwargs, i, n) for i, n in enumerate(names) if i != index]
    assert others == [v for i, v in enumerate(values) if i != index]


def test_call_arg_missing():
    with pytest.raises(TypeError, match="'x'"):
        call_arg((), {}, 0, "x")
    assert call_arg((), {}, 0, "x", default=None) is None
    assert with_call_arg((), {}, 1, "y", 5) == ((), {"y": 5})
