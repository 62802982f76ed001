import ib_resilience


def test_version_is_a_string() -> None:
    assert isinstance(ib_resilience.__version__, str) and ib_resilience.__version__.count(".") == 2
