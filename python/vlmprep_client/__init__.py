"""Client of the `vlmprep serve` sidecar: packed batches as numpy arrays viewing shared memory.

Usage (one loader per data-parallel rank, each talking to its rank's server)::

    from vlmprep_client import SidecarLoader
    loader = SidecarLoader("/tmp/vlmprep-rank0.sock")
    for batch in loader:                     # dict of numpy arrays, no copy
        ids = torch.from_numpy(batch["input_ids"])
        ...
        if step % 100 == 0:
            save(loader.state_dict())        # this rank's part of the job state

Resume: gather every rank's ``state_dict()`` (e.g. ``torch.distributed.all_gather_object``),
write them as one JSON list (:func:`save_job_state`) and start the servers with ``--resume``
on that file, with any number of ranks. See python/README.md for the contract.

Arrays of a batch view a slot of the ring: they stay valid until the next batch is asked for
(the slot is then released to the server). Copy what must live longer.
"""

import json
import mmap
import os
import socket
import time

import numpy as np

__all__ = ["SidecarLoader", "SidecarError", "Batch", "save_job_state", "load_job_state"]

_PROTOCOL_VERSION = 1


class SidecarError(RuntimeError):
    """The server refused a request or the connection broke."""


class Batch(dict):
    """A packed batch: field name -> numpy array (a view of shared memory).

    ``meta`` holds the server's description: ``position`` (in this rank's stream), ``global``
    (in the job's pack sequence), ``epoch``, ``pack``, ``samples`` ([{key, shard}] in order)
    and ``skipped`` (samples of the pack left out, with the reason).
    """

    meta: dict


class SidecarLoader:
    """Iterable over one rank's batches from a `vlmprep serve` server.

    ``socket_path``: the server's ``--socket``. ``connect_timeout``: seconds to wait for the
    server to come up (it plans the pool before it listens).
    """

    def __init__(self, socket_path, connect_timeout=120.0):
        self.socket_path = str(socket_path)
        self.connect_timeout = connect_timeout
        self._sock = None
        self._buf = b""
        self._mmap = None
        self._info = None
        self._state = None  # loaded state, sent with the next hello
        self._consumed = None
        self._held = []  # slots of batches handed out and not released yet
        # Meta of packs every sample of which failed: not yielded, but they take a position.
        self.empty_batches = []

    # ---- connection ------------------------------------------------------------------------

    def _connect(self):
        deadline = time.monotonic() + self.connect_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise SidecarError(f"no vlmprep server on {self.socket_path}")
                time.sleep(0.05)
        self._sock = sock
        self._buf = b""
        self._send({"op": "hello", "state": self._state, "position": None})
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 1)
        if not data:
            raise SidecarError("the server closed the connection during hello")
        self._buf = data
        ready = self._recv()
        if ready.get("op") != "ready":
            for fd in fds:
                os.close(fd)
            raise SidecarError(ready.get("message", f"unexpected reply {ready}"))
        if ready.get("version") != _PROTOCOL_VERSION:
            raise SidecarError(f"server protocol version {ready.get('version')}")
        if len(fds) != 1:
            raise SidecarError("the server sent no shared-memory descriptor")
        fd = fds[0]
        try:
            size = ready["slots"] * ready["slot_bytes"]
            self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._info = ready
        self._consumed = ready["position"]
        self._held = []
        self._state = None

    def _send(self, obj):
        self._sock.sendall(json.dumps(obj).encode() + b"\n")

    def _recv(self):
        while b"\n" not in self._buf:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise SidecarError("the server closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        """Says goodbye and drops the mapping (arrays still viewing it keep it alive)."""
        if self._sock is not None:
            try:
                self._send({"op": "bye"})
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # numpy views still hold it; it goes when they do
            self._mmap = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- iteration -------------------------------------------------------------------------

    def _view(self, spec):
        shape = tuple(spec["shape"])
        count = int(np.prod(shape)) if shape else 1
        arr = np.frombuffer(self._mmap, dtype=np.dtype(spec["dtype"]), count=count,
                            offset=spec["offset"])
        return arr.reshape(shape)

    def __iter__(self):
        if self._sock is None:
            self._connect()
        while True:
            self._send({"op": "next", "release": self._held})
            self._held = []
            msg = self._recv()
            op = msg.get("op")
            if op == "end":
                return
            if op != "batch":
                raise SidecarError(msg.get("message", f"unexpected reply {msg}"))
            self._held = [msg["slot"]]
            self._consumed = msg["position"] + 1
            meta = {k: msg[k] for k in ("position", "global", "epoch", "pack", "samples",
                                        "skipped")}
            if not msg["samples"]:
                self.empty_batches.append(meta)  # every sample failed: nothing to train on
                continue
            batch = Batch((name, self._view(spec)) for name, spec in msg["arrays"].items())
            batch.meta = meta
            yield batch

    # ---- checkpoints -----------------------------------------------------------------------

    def state_dict(self):
        """This rank's part of the job state: batches handed out so far count as consumed."""
        if self._state is not None:
            return dict(self._state)
        if self._info is None:
            self._connect()
        i = self._info
        return {
            "version": 1,
            "fingerprint": i["fingerprint"],
            "cursor": i["cursor"],
            "rank": i["rank"],
            "world": i["world"],
            "consumed": self._consumed,
        }

    def load_state_dict(self, state):
        """Continue from ``state`` (this rank's ``state_dict()``, same job layout as the
        server's). To change the number of ranks, restart the servers with ``--resume``."""
        if self._sock is not None:
            self.close()
        self._state = dict(state)
        self._info = None


def save_job_state(path, states):
    """Writes the states of all ranks of a job as the JSON list ``--resume`` reads."""
    states = sorted(states, key=lambda s: s["rank"])
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(states, f)
    os.replace(tmp, path)


def load_job_state(path):
    """Reads a file written by :func:`save_job_state`."""
    with open(path) as f:
        return json.load(f)
