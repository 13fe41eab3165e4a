import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; none is available on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
