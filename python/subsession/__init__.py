"""py-sub-session compatibility: ``import subsession; subsession.Session(...)``.

Code written for the ``py-sub-session`` library runs unchanged: this module re-exports
:class:`process_isolation.session.Session`, which takes the same arguments (``keep_global``,
``env``, ``inherit_env``, ``paths``, ``inherit_paths``) and has the same ``reload`` method.
"""

from process_isolation.session import Session, SharedExtensionWarning

__all__ = ['Session', 'SharedExtensionWarning']
