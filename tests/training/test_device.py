"""``device: cuda`` without CUDA is a one-line error, not a torch traceback."""

from __future__ import annotations

import pytest
import torch

from genrec.training.loop import _device


def test_cuda_without_cuda_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device is available") as e:
        _device("cuda")
    assert "\n" not in str(e.value)
    assert _device("auto") == torch.device("cpu")
    assert _device("cpu") == torch.device("cpu")
