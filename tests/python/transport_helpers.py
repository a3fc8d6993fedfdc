"""For test modules whose behaviour must hold on either transport.

    from transport_helpers import both_transports  # noqa: F401 (runs each test per transport)

overrides the `transport` fixture of conftest in that module: every test that uses a context
runs once through the shared-memory rings and once over the socket alone."""

import pytest


@pytest.fixture(name='transport', params=['shm', 'socket'])
def both_transports(request):
    return request.param
