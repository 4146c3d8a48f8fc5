"""Spreading a command's items (photos to segment, images to score) over a
Ray cluster, with nothing lost and nothing done twice.

    with cluster.connected(address) as where:      # 'local', 'auto' or 'host:port'
        with cluster.Pool(factory, visible=[...]) as pool:
            pool.map(items, on_result, outputs_of=...)

connected(): 'local' starts a cluster on this machine (its CPUs, or
num_cpus) and shuts it down on leaving, leaving no process behind; 'auto'
joins the cluster `ray start` runs here or RAY_ADDRESS names; 'host:port'
joins that head node. A cluster that cannot be reached is a ClusterError
in one line.

Pool: one Ray actor per worker (one CPU each by default), each built once
from `factory` (a picklable callable, e.g. functools.partial of a class
that loads the net) and then called once per item. Each worker also
checks that it sees the `visible` paths (the weights, the images, the
output folder): on a real cluster they must be on storage every node
mounts at the same path (see docs/cluster.md), and a node that does not
see them is named before any work.

Pool.map: results come back to the driver in the order they finish, each
passed to on_result(index, result) once; the workers write the outputs
themselves, through the same temporary-then-rename writes as one process
(common/outputs.py), so the driver carries no image data. A worker process
that dies mid-item (killed, out of memory, its node lost) costs only its
items in flight: they are redone by a live worker or by the same one,
restarted by Ray (MAX_RESTARTS), after its temporary files are removed
(outputs_of tells which). An exception raised by the worker's function
for an item ends the run with that same exception on the driver (the
command reports it as in one process). Ctrl-C or SIGTERM on the driver
(cli.stop_on_signals raises Interrupted) kills the workers, removes the
temporary files of the items they had in flight, and propagates with
`done` and `total` set on it (the items finished, and all), for the
command's one line; leaving connected() then stops a local cluster.
"""
import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from typing import NamedTuple

# Ray's processes print a stack trace on SIGTERM (absl's failure signal
# handler): the command's one line says what happened. Read as ray loads.
os.environ.setdefault('RAY_DISABLE_FAILURE_SIGNAL_HANDLER', '1')

# `import ray` takes about 0.3 s here: at the top, with the rest (infer.py
# and score.py load it whether or not --ray is given).
import ray  # noqa: E402
import ray._private.utils  # noqa: E402
import ray.exceptions  # noqa: E402

from common import cli, outputs  # noqa: E402
from common.progress import Progress  # noqa: E402

LOCAL, AUTO = 'local', 'auto'
IN_FLIGHT = 2        # calls queued per worker: its next item waits there while one runs
MAX_RESTARTS = 3     # times Ray restarts a worker whose process died, before the run goes on without it
WAIT_S = 0.2         # the driver wakes this often: signals, progress lines
KILL_WAIT_S = 10.0   # after killing the workers, how long to wait for their processes to end


class ClusterError(Exception):
    """The cluster cannot do the work; the message says why and what to do."""


class Where(NamedTuple):
    """The cluster a run is connected to."""
    address: str        # what was asked: 'local', 'auto' or host:port
    started: bool       # whether this run started it (and stops it)
    cpus: int           # CPUs the cluster has
    nodes: int          # its live nodes


def _check_address(address):
    """A host:port address's (host, port), or a ClusterError."""
    host, _, port = address.rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray {address}: not 'local', 'auto' or host:port "
                           "(e.g. 10.0.0.5:6379, the head node's `ray start --head` port)")
    return host, int(port)


@contextlib.contextmanager
def connected(address, num_cpus=None):
    """Within: this process is the driver of the Ray cluster `address`
    ('local', 'auto', 'host:port'); yields a Where. A local cluster gets
    `num_cpus` CPUs (default: the machine's) and is shut down on leaving,
    whatever ends the block, its session folder removed; a joined cluster is only left (the workers
    this run started end with it). Keeps the command's signal handlers
    (ray.init puts in its own for SIGTERM)."""
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    session_dir = None
    if address == LOCAL:
        # Its session folder (sockets, logs) in a temporary folder of its
        # own, removed when the cluster stops: Ray's default, /tmp/ray,
        # keeps every session's.
        session_dir = tempfile.mkdtemp(prefix='fcn-ray-')
        options.update(_temp_dir=session_dir, address=LOCAL)  # a new one, never `ray start`'s
        # Ray turns token authentication on for a new local cluster, with a
        # notice on stderr saying so: kept, without the notice.
        logging.getLogger('ray._private.authentication').setLevel(logging.ERROR)
        options.update(num_cpus=num_cpus or os.cpu_count())
    elif address == AUTO:
        if 'RAY_ADDRESS' in os.environ and os.environ['RAY_ADDRESS'] not in ('', AUTO, LOCAL):
            _reachable(os.environ['RAY_ADDRESS'], 'RAY_ADDRESS')
        options.update(address=AUTO)
    else:
        _reachable(address, '--ray')
        options.update(address=address)
    if ray.is_initialized():
        if session_dir:
            os.rmdir(session_dir)
        raise ClusterError('this process is connected to a Ray cluster already')
    handlers = {s: signal.getsignal(s) for s in cli.STOP_SIGNALS}
    try:
        try:
            # A signal while Ray starts its processes waits until they are
            # all up (then raised, and shutdown() below ends them): cut
            # short, ray.init leaves some running with no one to stop them.
            with cli.signals_deferred(), _command_keeps_sigterm():
                ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            what = ('no Ray cluster runs here (start one with `ray start --head`, or set RAY_ADDRESS)'
                    if address == AUTO else str(e).splitlines()[0])
            raise ClusterError(f'--ray {address}: cannot connect: {what}') from None
        finally:
            for s, handler in handlers.items():
                if handler is not None:
                    signal.signal(s, handler)
        resources = ray.cluster_resources()
        yield Where(address, address == LOCAL, int(resources.get('CPU', 0)),
                    sum(1 for node in ray.nodes() if node.get('Alive')))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if session_dir:
            shutil.rmtree(session_dir, ignore_errors=True)


@contextlib.contextmanager
def _command_keeps_sigterm():
    """Within: ray.init leaves the command's SIGTERM handler in place. Its
    first step puts in one of its own (sys.exit), which would cut the start
    short with Ray's processes running and no one to stop them; through
    the function it calls for that (ray._private.utils.set_sigterm_handler,
    the one place it does so), set aside while ray.init runs."""
    setter = ray._private.utils.set_sigterm_handler
    ray._private.utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray._private.utils.set_sigterm_handler = setter


def _reachable(address, option):
    """A ClusterError, quickly, if nothing listens at host:port (ray.init
    would try for a minute)."""
    host, port = _check_address(address.split('://')[-1])
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise ClusterError(f'{option} {address}: no Ray head node answers there '
                           f'({e.strerror or e}); is `ray start --head` running on it?') from None


def _alive(pid):
    """Whether process `pid` of this machine still runs (a zombie does not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _portable(error):
    """`error` if it survives pickling (the driver re-raises the same
    exception: the command's own error handling reports it), else a
    RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 -- whatever does not pickle is sent as text
        return RuntimeError(f'{type(error).__name__}: {error}')


class _Worker:
    """What runs in each worker process: the function `factory` built, once."""

    def __init__(self, factory):
        self.function, self.error = None, None
        try:
            self.function = factory()
        except Exception as e:  # noqa: BLE001 -- reported by ready(), on the driver
            self.error = _portable(e)

    def ready(self, paths=()):
        """(the factory's error or None, pid, host, the `paths` this node does not see)."""
        return self.error, os.getpid(), socket.gethostname(), [p for p in paths if not os.path.exists(p)]

    def call(self, item):
        """(True, the function's result) or (False, the exception it raised)."""
        try:
            return True, self.function(item)
        except Exception as e:  # noqa: BLE001 -- re-raised on the driver
            return False, _portable(e)


class Stats(NamedTuple):
    """What a map did besides its results."""
    done: int           # items finished (each passed to on_result once)
    redone: int         # items resubmitted after their worker died
    workers_lost: int   # workers gone for good (restarts used up, or their factory failed on restart)


class Pool:
    """`workers` Ray actors (default: as many as the cluster's CPUs allow at
    `cpus` each), each built once by calling `factory` in its process; see
    the module docstring. Use as a context manager, or call close()."""

    def __init__(self, factory, workers=None, cpus=1, visible=(), max_restarts=MAX_RESTARTS):
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get('CPU', 1) // cpus))
        self.visible = [os.path.abspath(p) for p in visible]
        remote = ray.remote(_Worker).options(num_cpus=cpus, max_restarts=max_restarts,
                                             max_task_retries=0)
        self.actors = [remote.remote(factory) for _ in range(workers)]
        self.pid, self.host = {}, {}
        try:
            probes = {actor.ready.remote(self.visible): k for k, actor in enumerate(self.actors)}
            while probes:
                ready, _ = ray.wait(list(probes), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    k = probes.pop(ref)
                    self.pid[k], self.host[k] = self._checked(ray.get(ref))
        except ray.exceptions.RayActorError as e:
            self.close()
            raise ClusterError(f'a worker died while starting: {str(e).splitlines()[0]}') from None
        except BaseException:
            self.close()
            raise

    def _checked(self, answer):
        """A worker's (pid, host) from its ready() answer; its factory's
        error, or a ClusterError naming what its node does not see."""
        error, pid, host, missing = answer
        if error is not None:
            raise error
        if missing:
            raise ClusterError(f'the worker on {host} does not see {", ".join(missing)}: on a '
                               'cluster, inputs, weights and outputs must be on storage every node '
                               'mounts at the same path (docs/cluster.md)')
        return pid, host

    def pids(self):
        """The worker processes' ids, as they answered last (a restarted
        worker answers anew once it is ready)."""
        return [self.pid[k] for k in sorted(self.pid)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Kill the workers (their items in flight are lost: map() cleans up
        after them) and wait, briefly, until their processes are gone: Ray
        may call an actor dead while its process still runs, and a process
        still running may still write."""
        actors, self.actors = self.actors, []
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        # A killed actor's pending call fails once its process is gone.
        pending = []
        for actor in actors:
            with contextlib.suppress(Exception):
                pending.append(actor.ready.remote())
        deadline = time.monotonic() + KILL_WAIT_S
        while pending and time.monotonic() < deadline:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
        here = [self.pid[k] for k in self.pid if self.host.get(k) == socket.gethostname()]
        while time.monotonic() < deadline and any(_alive(pid) for pid in here):
            time.sleep(0.05)

    def map(self, items, on_result=None, outputs_of=None, desc='', unit='image', progress=True):
        """Call the workers' function once per item of `items` (a list),
        spread over the workers; on_result(index, result) in the order they
        finish. `outputs_of(item)`: the paths an item writes, whose
        temporary files are removed when its worker dies mid-item. Returns
        Stats. Progress (common.progress) counts finished items. On an
        error or interruption the workers are killed (the pool is closed)
        and it propagates; an interruption gets `done` and `total`."""
        items = list(items)
        todo = deque(range(len(items)))
        running = {}                 # ref -> (item index, worker)
        restarting = {}              # ref of a ready() probe -> worker
        free = {k: IN_FLIGHT for k in range(len(self.actors))}
        done, redone, lost = set(), 0, 0
        bar = Progress(len(items), desc, unit, enabled=progress and len(items) > 1)
        finished = False
        try:
            while len(done) < len(items):
                for k in list(free):
                    while free[k] and todo:
                        index = todo.popleft()
                        running[self.actors[k].call.remote(items[index])] = index, k
                        free[k] -= 1
                if not running and not restarting:
                    raise ClusterError(f'every worker died ({lost} of {len(self.actors)} gone for '
                                       f'good after {MAX_RESTARTS} restarts each); '
                                       f'{len(items) - len(done)} items not done')
                ready, _ = ray.wait(list(running) + list(restarting), num_returns=1, timeout=WAIT_S)
                bar.tick()
                for ref in ready:
                    if ref in restarting:
                        k = restarting.pop(ref)
                        try:
                            self.pid[k], self.host[k] = self._checked(ray.get(ref))
                            free[k] = IN_FLIGHT - sum(1 for _, w in running.values() if w == k)
                        except ray.exceptions.ActorUnavailableError:
                            restarting[self.actors[k].ready.remote(self.visible)] = k
                        except ray.exceptions.RayActorError:
                            lost += 1  # dead for good
                        except Exception as e:  # noqa: BLE001 -- restarted where its factory fails
                            lost += 1
                            bar.write(f'cluster: a restarted worker cannot work: {e}')
                            ray.kill(self.actors[k], no_restart=True)
                        continue
                    index, k = running.pop(ref)
                    try:
                        ok, value = ray.get(ref)
                    except ray.exceptions.RayActorError:
                        # Its process died: the item is redone, by whichever
                        # worker is free first; the worker leaves the
                        # rotation until it answers again (restarted by Ray).
                        self._clean(items[index], outputs_of)
                        todo.appendleft(index)
                        redone += 1
                        if k in free:
                            del free[k]
                            restarting[self.actors[k].ready.remote(self.visible)] = k
                            # stdout: a run that ends well has nothing on stderr
                            bar.write(f'cluster: worker {self.pid.get(k)} died with items in flight; '
                                      'redoing them')
                        continue
                    if k in free:
                        free[k] += 1
                    if not ok:
                        raise value
                    if index in done:
                        continue  # cannot happen (no call is retried by Ray): never count twice
                    done.add(index)
                    if on_result:
                        on_result(index, value)
                    bar.update()
            finished = True
        except BaseException as e:
            in_flight = [items[index] for index, _ in running.values()]
            self.close()  # the workers end before their temporaries are removed
            for item in in_flight:
                self._clean(item, outputs_of)
            if isinstance(e, KeyboardInterrupt):
                e.done, e.total = len(done), len(items)
            raise
        finally:
            bar.close(finished)
        return Stats(len(done), redone, lost)

    @staticmethod
    def _clean(item, outputs_of):
        """Remove the temporary files a dead worker left for `item`."""
        if outputs_of is None:
            return
        for path in outputs_of(item):
            for tmp in outputs.temporaries(path):
                with contextlib.suppress(OSError):
                    os.remove(tmp)


def map_items(address, factory, items, on_result=None, outputs_of=None, workers=None, cpus=1,
              visible=(), num_cpus=None, desc='', unit='image', progress=True):
    """connected(address) + Pool + Pool.map in one call: what a command
    runs. Returns Pool.map's Stats."""
    with connected(address, num_cpus) as _, Pool(factory, workers, cpus, visible) as pool:
        return pool.map(items, on_result, outputs_of, desc, unit, progress)
