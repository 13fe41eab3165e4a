import pytest
import torch

# The suite runs one process per core (pytest -n): torch's own intra-op threads on top of that
# oversubscribe the cores, and tiny batched linear algebra then spends seconds spinning.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; none is available on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
