"""Shared pytest configuration and fixtures."""

import pytest


def pytest_collection_modifyitems(config, items):
    """Run the slow (place-and-route) tests first.

    pytest-xdist hands tests to its workers in collection order, so a long test collected last
    would run alone at the end on a 2-core CI machine; started first, it overlaps with the rest.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def l1bn_cli(capsys):
    """Run ``l1bn ARGV`` in-process; return (exit status, stdout + stderr)."""
    from l1bn.cli.main import main

    def run(argv):
        with pytest.raises(SystemExit) as e:
            main(argv)
        out = capsys.readouterr()
        return e.value.code, out.out + out.err

    return run
