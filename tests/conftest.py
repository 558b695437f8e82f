import pytest


class VirtualClock:
    """A clock the test moves by hand: sampler reads and request timestamps become exact."""

    def __init__(self, t: float = 0.0) -> None:
        self.now = t

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> float:
        self.now += dt
        return self.now


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()
