"""Limits(memory=, cpu_seconds=, open_files=, file_size=): applied in the child before the first
module is imported; going past one is an ordinary error in the parent (MemoryError, OSError) or
a reported termination (SIGXCPU), never harm to the parent."""

import errno
import resource
import time

import pytest

from process_isolation import IsolationContext, Limits, ProcessTerminationError

from conftest import child_pids
from supervision_helpers import forbid_core_dumps, memory_of_this_process
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)

pytestmark = pytest.mark.usefixtures('no_core_files')

MiB = 1 << 20


def memory_limit():
    """A limit the child starts well inside (the child may add 256 MiB to what it maps when it
    starts) but that a 1 GiB allocation goes past."""
    return 256 * MiB


def test_limits_are_in_force_while_the_first_module_is_imported(new_context):
    memory = memory_limit()
    context = new_context(limits=Limits(memory=memory, cpu_seconds=30, open_files=64,
                                        file_size=MiB))
    module = context.load_module('isofix_limits_at_import')
    at_import = module.AT_IMPORT
    # RLIMIT_AS is what the child mapped when the limit was applied, a little before the import,
    # plus the memory it may add.
    soft, hard = at_import['RLIMIT_AS']
    assert soft == hard
    mapped_when_applied = soft - memory
    assert 0 < mapped_when_applied <= module.MAPPED_AT_IMPORT
    assert module.MAPPED_AT_IMPORT - mapped_when_applied < 64 * MiB
    assert at_import['RLIMIT_CPU'][0] == 30
    # 64 fds besides those it held when the limit was applied (since then the connection has
    # made a few of its own, and the import holds one or two for a moment).
    assert at_import['RLIMIT_NOFILE'][0] == at_import['RLIMIT_NOFILE'][1]
    assert 56 <= module.FREE_FDS_AT_IMPORT <= 64
    assert at_import['RLIMIT_FSIZE'] == (MiB, MiB)


def test_a_memory_limit_is_counted_from_what_the_child_maps_when_it_starts(new_context):
    # A forked child starts as a copy of this process: its limit lies that far above.
    parent_maps = memory_of_this_process('VmSize')
    context = new_context(limits=Limits(memory=memory_limit()))
    soft, _ = context.call(resource.getrlimit, resource.RLIMIT_AS)
    assert soft - memory_limit() > parent_maps - 64 * MiB


def test_limits_leave_the_parent_alone(new_context):
    kinds = (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE,
             resource.RLIMIT_FSIZE)
    before = [resource.getrlimit(kind) for kind in kinds]
    context = new_context(limits=Limits(memory=memory_limit(), cpu_seconds=30, open_files=64,
                                        file_size=MiB))
    context.start()
    soft, hard = context.call(resource.getrlimit, resource.RLIMIT_NOFILE)
    assert soft == hard and soft >= 64
    assert [resource.getrlimit(kind) for kind in kinds] == before


def test_going_past_the_memory_limit_raises_memory_error_and_the_child_lives_on(new_context):
    context = new_context(limits=Limits(memory=memory_limit()))
    hog = context.load_module('isofix_hog')
    pid = context.pid
    assert hog.allocate(16 * MiB) == 16 * MiB
    with pytest.raises(MemoryError):
        hog.allocate(1024 * MiB)
    assert context.alive
    assert hog.allocate(MiB) == MiB
    assert context.pid == pid


def test_the_memory_limit_binds_a_module_while_it_is_imported(new_context):
    context = new_context(limits=Limits(memory=memory_limit()),
                          env={'ISOFIX_HOG_BYTES': str(1024 * MiB)})
    context.start()
    pid = context.pid
    with pytest.raises(MemoryError):
        context.load_module('isofix_import_hog')
    # The failed import was an ordinary error: the child goes on.
    assert context.load_module('isofix_basic').add(1, 2) == 3
    assert context.pid == pid


def test_the_same_module_imports_without_the_memory_limit(new_context):
    # The counterpart of the test above: the allocation itself is possible (small, so the test
    # stays cheap; what matters is that it is the limit that made the import fail).
    context = new_context(env={'ISOFIX_HOG_BYTES': str(MiB)})
    assert len(context.load_module('isofix_import_hog').HOG) == MiB


def test_using_up_the_cpu_limit_is_reported_as_sigxcpu(new_context):
    context = new_context(limits=Limits(cpu_seconds=1))
    hog = context.load_module('isofix_hog')
    forbid_core_dumps(context)
    pid = context.pid
    start = time.monotonic()
    with pytest.raises(ProcessTerminationError) as caught:
        hog.burn_cpu()
    assert time.monotonic() - start < 10
    error = caught.value
    assert error.signal_name == 'SIGXCPU'
    assert error.exit_code is None
    assert error.pid == pid
    assert error.call == 'isofix_hog.burn_cpu()'
    assert 'SIGXCPU' in str(error)
    assert pid not in child_pids()


def test_going_past_the_open_files_limit_raises_emfile_and_the_child_lives_on(new_context):
    context = new_context(limits=Limits(open_files=32))
    hog = context.load_module('isofix_hog')
    assert hog.open_files('/dev/null', 16) == 16
    with pytest.raises(OSError) as caught:
        hog.open_files('/dev/null', 64)
    assert caught.value.errno == errno.EMFILE
    assert hog.open_files('/dev/null', 16) == 16  # the failed call closed what it opened
    assert context.alive


def test_going_past_the_file_size_limit_raises_efbig_and_the_child_lives_on(new_context,
                                                                              tmp_path):
    context = new_context(limits=Limits(file_size=4096))
    hog = context.load_module('isofix_hog')
    assert hog.write_bytes(str(tmp_path / 'small'), 4096) == 4096
    with pytest.raises(OSError) as caught:
        hog.write_bytes(str(tmp_path / 'large'), 3 * 4096)
    assert caught.value.errno == errno.EFBIG
    assert (tmp_path / 'large').stat().st_size == 4096
    assert context.alive  # SIGXFSZ did not kill it


def test_a_restarted_child_gets_the_limits_too(new_context):
    context = new_context(limits=Limits(open_files=48), restart='auto')
    flaky = context.load_module('isofix_flaky')

    def free_fds():
        return context.load_module('isofix_introspect').free_fds_below_the_open_files_limit()

    assert 40 <= free_fds() <= 48
    with pytest.raises(ProcessTerminationError):
        flaky.process(3)
    assert flaky.process(1) == 2  # auto-restarted
    assert 40 <= free_fds() <= 48
    context.restart()
    assert 40 <= free_fds() <= 48


@pytest.mark.parametrize('value', [0, -1, True, 'big', 1.5j])
def test_limits_reject_a_value_that_is_not_a_positive_number(value):
    for name in ('memory', 'cpu_seconds', 'open_files', 'file_size'):
        with pytest.raises(ValueError):
            Limits(**{name: value})


def test_a_context_rejects_limits_that_are_not_a_limits_object():
    with pytest.raises(TypeError):
        IsolationContext(limits={'memory': 1 << 30})
