"""The floor and the references: what the hardware and the OS cost, measured in the same run.

- `FloorProgram` compiles bench/floor_pingpong.c with `cc -O2` into a temporary directory and
  runs its modes (64-byte socketpair round trip, the same through shared memory, memcpy,
  one-way socketpair stream).
- `fork_exit_wait` is the start-up reference: a bare os.fork() + os._exit(0) + os.waitpid().
"""

import os
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'floor_pingpong.c')
RUN_TIMEOUT_S = 120


class FloorProgram:
    """The compiled floor program. A context manager: leaving it deletes the build directory.

    Raises RuntimeError from `__enter__` when there is no C compiler or the build fails.
    """

    def __enter__(self):
        compiler = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
        if compiler is None:
            raise RuntimeError('no C compiler (cc) found')
        self.build_dir = tempfile.mkdtemp(prefix='bench-floor-')
        self.binary = os.path.join(self.build_dir, 'floor_pingpong')
        built = subprocess.run([compiler, '-O2', '-o', self.binary, SOURCE],
                               capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if built.returncode != 0:
            shutil.rmtree(self.build_dir, ignore_errors=True)
            raise RuntimeError(f'{compiler} failed: {built.stderr.strip()}')
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.build_dir, ignore_errors=True)

    def run(self, mode, amount, reps, cpus=None):
        """Run one mode; return its samples in seconds per operation.

        With `cpus` = (parent CPU, child CPU), the two processes are pinned to those CPUs.
        """
        command = [self.binary, mode, str(amount), str(reps)]
        command += [str(cpu) for cpu in cpus] if cpus else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f'floor_pingpong {mode} failed: {done.stderr.strip()}')
        return [float(line) * 1e-9 for line in done.stdout.split()]

    def round_trip(self, iters, reps, cpus=None):
        """Seconds per 64-byte round trip between two processes over an AF_UNIX socketpair."""
        return self.run('rtt', iters, reps, cpus)

    def shm_round_trip(self, iters, reps):
        """Seconds per 64-byte round trip between two processes through shared memory, both
        spinning: the hardware floor of a hand-over."""
        return self.run('shm', iters, reps)

    def memcpy(self, size, reps):
        """Seconds per memcpy of `size` bytes."""
        return self.run('memcpy', size, reps)

    def stream(self, size, reps):
        """Seconds to move `size` bytes one way over an AF_UNIX socketpair."""
        return self.run('stream', size, reps)


def fork_exit_wait():
    """One bare os.fork() + os._exit(0) in the child + os.waitpid() in the parent."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
