"""One torch thread for these tests: they run thousands of tiny ops (token-by-token sampling), which on
a shared 2-core machine are many times slower multi-threaded (each op waits for a second core)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
