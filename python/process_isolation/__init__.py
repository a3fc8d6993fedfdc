"""process_isolation: run Python modules in an isolated child process, use them through proxies.

    from process_isolation import import_isolated, ProcessTerminationError
    buggy = import_isolated('buggy')      # fork; the child imports buggy
    try:
        buggy.dragons_here()              # runs in the child
    except ProcessTerminationError as e:  # the child died of SIGSEGV; we did not
        print(e.signal_name, e.child_traceback)
"""

from ._core import Proxy
from .context import (
    IsolationContext,
    byvalue,
    default_context,
    import_isolated,
    isproxy,
    load_module,
    timeout,
)
from .hook import isolated
from .limits import Limits
from .session import Session, SharedExtensionWarning
from .errors import (
    CallTimeoutError,
    ClientStateError,
    ProcessTerminationError,
    ProtocolError,
    RemoteTraceback,
)

__all__ = [
    "CallTimeoutError",
    "ClientStateError",
    "IsolationContext",
    "Limits",
    "ProcessTerminationError",
    "ProtocolError",
    "Proxy",
    "RemoteTraceback",
    "Session",
    "SharedExtensionWarning",
    "byvalue",
    "default_context",
    "import_isolated",
    "isolated",
    "isproxy",
    "load_module",
    "timeout",
]

__version__ = "0.1.0"
