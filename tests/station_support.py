"""Real parts for the station tests: a pymodbus server as the PLC (it keeps its memory across a
restart, as a PLC does across a network outage, and records every write it receives), a mosquitto
broker on a free loopback port, and small helpers to read the station's database."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

MOSQUITTO = "/usr/sbin/mosquitto"
FUNCTION_WRITE_REGISTERS, FUNCTION_WRITE_REGISTER = 16, 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModbusPlc:
    """A real Modbus TCP server on 127.0.0.1 (pymodbus) standing in for the PLC."""

    def __init__(self, port: int | None = None, registers: int = 16):
        self.port = port or free_port()
        self.size = registers
        self.writes: list[tuple[int, int, list]] = []  # (function code, address, values), in order
        self.memory = {"hr": [0] * registers, "co": [False] * registers}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = None

    async def _action(self, function_code, start_address, address, count, current_registers, set_values):
        if set_values is not None:  # mirrored, so a restart keeps exactly what was applied
            self.writes.append((function_code, address, list(set_values)))
            table = "hr" if function_code in (6, 16) else "co"
            for i, value in enumerate(set_values):
                self.memory[table][address + i] = value
        return None

    def _device(self) -> SimDevice:
        hr, co = self.memory["hr"], self.memory["co"]
        return SimDevice(id=0, action=self._action, simdata=(
            [SimData(0, values=list(co), datatype=DataType.BITS)],
            [SimData(0, count=self.size, values=False, datatype=DataType.BITS)],
            [SimData(0, values=list(hr), datatype=DataType.REGISTERS)],
            [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)]))

    def start(self) -> "ModbusPlc":
        async def start():
            server = ModbusTcpServer(self._device(), address=("127.0.0.1", self.port))
            await server.serve_forever(background=True)
            return server

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        """Down (connection refused), remembering its registers for the restart."""
        if self.server is None:
            return
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.server = None
        time.sleep(0.1)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _client(self) -> ModbusTcpClient:
        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2, retries=1)
        assert client.connect(), "the test PLC is not reachable"
        return client

    def registers(self, count: int = 3) -> list[int]:
        """Holding registers 0..count-1, read over Modbus like any other PLC client would."""
        client = self._client()
        try:
            return list(client.read_holding_registers(0, count=count, device_id=1).registers)
        finally:
            client.close()

    def coils(self, count: int = 1) -> list[bool]:
        client = self._client()
        try:
            return list(client.read_coils(0, count=count, device_id=1).bits[:count])
        finally:
            client.close()

    def set_registers(self, values: list[int]) -> None:
        client = self._client()
        try:
            assert not client.write_registers(0, values, device_id=1).isError()
        finally:
            client.close()
        self.writes.clear()

    def sequence_writes(self) -> list[int]:
        """Every value the station wrote to the sequence register (1), in order."""
        out = []
        for code, address, values in self.writes:
            if code == FUNCTION_WRITE_REGISTERS and address <= 1 < address + len(values):
                out.append(values[1 - address])
            elif code == FUNCTION_WRITE_REGISTER and address == 1:
                out.append(values[0])
        return out


def start_mosquitto(tmp_path: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """A real mosquitto broker on a free loopback port (fails, never skips, when it is missing)."""
    binary = MOSQUITTO if Path(MOSQUITTO).is_file() else shutil.which("mosquitto")
    assert binary, (f"mosquitto not found at {MOSQUITTO}: `make install` installs it (Debian package "
                    "mosquitto; as root), or `sudo apt-get install mosquitto`")
    port = port or free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            assert process.poll() is None, f"mosquitto exited: {process.stderr.read().decode()[-500:]}"
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"mosquitto did not listen on 127.0.0.1:{port} within 10 s")


def db_rows(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM decisions ORDER BY id")]


def alarms(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM alarms ORDER BY id")]


def make_replay(tile_model, folder: Path, per_class: int, offset: int = 0) -> Path:
    """A class-folder tree of `per_class` test images per class (links), for a replay source."""
    _, by_class = tile_model
    for name, paths in by_class.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for path in paths[offset: offset + per_class]:
            (folder / name / path.name).symlink_to(path.resolve())
    return folder


def station_config(tile_model, replay: Path, db: Path, **changes):
    from edgeprune.station import load_config

    values = {"model": tile_model[0], "source": f"replay:{replay}", "db": db, "ok_classes": "free",
              "drain_timeout": 10.0, "retry_min_s": 0.02, "retry_max_s": 0.2}
    values.update(changes)
    return load_config(None, values)


def scaled_copy(model: Path, out: Path, factor: float) -> Path:
    """The same network with its classifier's logits scaled by `factor`. factor > 1 keeps every
    top class with a much higher top probability (a fallback that is sure where the primary was
    not; or just a different file making the same calls); -1 swaps two classes' scores, so the
    copy calls every part the opposite of the trained model: a real, clearly worse candidate."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model))
    last = [n for n in graph.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    inits = {i.name: i for i in graph.graph.initializer}
    for name in last.input[1:]:
        if name in inits:
            scaled = numpy_helper.to_array(inits[name]) * np.float32(factor)
            inits[name].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), name))
    onnx.save(graph, str(out))
    return out
