import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import localaws  # noqa: E402


@pytest.fixture(autouse=True)
def clean_state():
    """Every test starts from an empty local AWS (moto's reset also resets the
    replication settings, pending jobs, blobs and statuses), and leaves one:
    global settings such as event drop or duplicate rates must not outlive the
    test that set them."""
    try:
        localaws.reset()
    except OSError as err:  # pragma: no cover
        pytest.exit(f"local AWS not reachable at {localaws.ENDPOINT} ({err}); run infra/local-aws/start", 2)
    yield
    localaws.reset()
