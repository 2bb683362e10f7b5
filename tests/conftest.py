"""Shared pytest configuration."""


def pytest_collection_modifyitems(config, items):
    """Run the slow (place-and-route) tests first.

    pytest-xdist hands tests to its workers in collection order, so a long test collected last
    would run alone at the end on a 2-core CI machine; started first, it overlaps with the rest.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
