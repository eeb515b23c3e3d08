"""Signals to the PLC: Modbus TCP (pymodbus) or OPC UA (asyncua), store-and-forward, none lost,
none sent twice.

What the PLC sees (the default Modbus map; OPC UA writes the same three values to node ids):
holding register 0 = DEFECT signals delivered so far (mod 65536), register 1 = the sequence id of
the last part decided (the decision row's id, low 16 bits), register 2 = its decision (0 OK,
1 DEFECT, 2 REVIEW), coil 0 set for a DEFECT (the reject pulse; the PLC program resets it).

Store-and-forward. The queue is the `decisions` table itself: a decision is written `pending` in
the transaction that logs it, and `Forwarder` delivers pending rows strictly in id order, one at a
time, marking a row `sent` only after the PLC acknowledged its write. When the PLC is unreachable
the rows stay pending, an alarm is logged once per outage, the connection is retried with doubling
back-off, and delivery resumes in order when the PLC is back; pending rows left at exit are
delivered first at the next start.

Never twice -- the crash window. Between the PLC's acknowledgement and the `sent` update, the
station can die (SIGKILL, power) or the acknowledgement itself can be lost (a write that reached
the PLC but whose answer did not come back). A blind retry would then deliver that part twice. Two
things close the window:
1. Every write carries absolute values, never increments: register 0 is *the count of DEFECTs
   delivered including this one*, computed from the log (sent DEFECT rows + 1). Writing the same
   signal again leaves the PLC's state unchanged, so even a repeated write cannot double a count.
2. Before the first write after (re)connecting -- at start-up and after any failed write -- the
   forwarder reads the three values back. Because delivery is strictly one at a time, only the
   oldest pending row can be in the unknown state; if the PLC already holds its sequence id,
   decision and count, it was delivered before the crash, and it is marked `sent` without being
   written again. The sequence register is written last (in the same Modbus request when the
   registers are contiguous, as by default), so it is the commit mark: a write cut off half-way
   does not match and is simply written again.
(The low 16 bits of the sequence id could only collide if 65536 consecutive rows needed no
signal, i.e. were all ERRORs; the count and decision are compared too.)

The reject coil cannot be in the same Modbus request as the registers, so it is written first: a
reject is never lost, but if the register write then fails, the retry sets the coil again. A PLC
program that must never act twice on one part keys on the sequence register changing (exactly
once per part), and reads the count and decision registers with it; the coil is a convenience.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from edgeprune.errors import EdgepruneError
from edgeprune.station.config import Endpoint, ModbusMap, OpcUaMap, parse_plc_url
from edgeprune.station.log import DECISION_CODES, DecisionLog, Signal

log = logging.getLogger("edgeprune.station.plc")


class PlcUnavailable(Exception):
    """The PLC did not acknowledge: not reachable, or the connection broke mid-request."""


class PlcAdapter:
    """One PLC protocol: `write` the three values (sequence last), `read_back` them."""

    name = ""

    def connect(self) -> None:
        raise NotImplementedError

    def write(self, count: int, sequence: int, decision: int, reject: bool) -> None:
        raise NotImplementedError

    def read_back(self) -> tuple[int, int, int]:
        """(count, sequence, decision) as the PLC holds them now."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ModbusAdapter(PlcAdapter):
    name = "modbus"

    def __init__(self, endpoint: Endpoint, mapping: ModbusMap):
        from pymodbus.client import ModbusTcpClient

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its own retries are noise here
        self.mapping = mapping
        self.unit = int(endpoint.query.get("unit", mapping.unit))
        self.where = f"modbus://{endpoint.host}:{endpoint.port} unit {self.unit}"
        self.client = ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=mapping.timeout_s, retries=0)
        m = mapping
        self.contiguous = (m.sequence_register == m.count_register + 1 and m.decision_register == m.count_register + 2)

    def _check(self, response, what: str):
        if response is None or response.isError():
            raise PlcUnavailable(f"{self.where}: {what} refused: {response}")
        return response

    def connect(self) -> None:
        self.client.close()
        if not self.client.connect():
            raise PlcUnavailable(f"{self.where}: not reachable")

    def write(self, count: int, sequence: int, decision: int, reject: bool) -> None:
        from pymodbus.exceptions import ModbusException

        m, unit = self.mapping, self.unit
        try:
            if reject and m.reject_coil is not None:
                self._check(self.client.write_coil(m.reject_coil, True, device_id=unit), "reject coil")
            if self.contiguous:  # one request: count, decision and (commit mark) sequence at once
                self._check(self.client.write_registers(m.count_register, [count, sequence, decision],
                                                        device_id=unit), "registers")
            else:
                for address, value in ((m.count_register, count), (m.decision_register, decision),
                                       (m.sequence_register, sequence)):
                    self._check(self.client.write_register(address, value, device_id=unit), f"register {address}")
        except (ModbusException, OSError) as exc:
            raise PlcUnavailable(f"{self.where}: {exc}") from None

    def read_back(self) -> tuple[int, int, int]:
        from pymodbus.exceptions import ModbusException

        m, unit = self.mapping, self.unit
        try:
            values = {}
            for address in (m.count_register, m.sequence_register, m.decision_register):
                response = self._check(self.client.read_holding_registers(address, count=1, device_id=unit),
                                       f"reading register {address}")
                values[address] = int(response.registers[0])
        except (ModbusException, OSError) as exc:
            raise PlcUnavailable(f"{self.where}: {exc}") from None
        return values[m.count_register], values[m.sequence_register], values[m.decision_register]

    def close(self) -> None:
        self.client.close()


class OpcUaAdapter(PlcAdapter):
    """The same three values written to three OPC UA variables in one Write request (sequence
    last), in each variable's own data type (read once at connect)."""

    name = "opcua"

    def __init__(self, endpoint: Endpoint, mapping: OpcUaMap):
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        self.mapping = mapping
        self.url = f"opc.tcp://{endpoint.host}:{endpoint.port}{endpoint.path}"
        self.where = self.url
        self.client = None
        self.nodes: list = []
        self.types: list = []

    def connect(self) -> None:
        from asyncua.sync import Client

        self.close()
        client = Client(self.url, timeout=self.mapping.timeout_s)
        try:
            client.connect()
        except Exception as exc:  # noqa: BLE001 - asyncua raises OSError, TimeoutError, ua errors
            client.tloop.stop()
            raise PlcUnavailable(f"{self.where}: not reachable ({type(exc).__name__}: {exc})") from None
        self.client = client
        try:
            m = self.mapping
            self.nodes = [client.get_node(n) for n in (m.count_node, m.decision_node, m.sequence_node)]
            self.types = [node.read_data_type_as_variant_type() for node in self.nodes]
        except Exception as exc:  # noqa: BLE001 - a bad node id: the configuration is wrong
            self.close()
            raise EdgepruneError(f"{self.where}: cannot use the configured OPC UA nodes "
                                 f"({self.mapping.count_node}, {self.mapping.decision_node}, "
                                 f"{self.mapping.sequence_node}): {exc}") from None

    def write(self, count: int, sequence: int, decision: int, reject: bool) -> None:
        from asyncua import ua

        if self.client is None:
            raise PlcUnavailable(f"{self.where}: not connected")
        values = [ua.Variant(v, t) for v, t in zip((count, decision, sequence), self.types)]
        try:
            self.client.write_values(self.nodes, values)
        except Exception as exc:  # noqa: BLE001
            raise PlcUnavailable(f"{self.where}: {type(exc).__name__}: {exc}") from None

    def read_back(self) -> tuple[int, int, int]:
        if self.client is None:
            raise PlcUnavailable(f"{self.where}: not connected")
        try:
            count, decision, sequence = (int(v) for v in self.client.read_values(self.nodes))
        except Exception as exc:  # noqa: BLE001
            raise PlcUnavailable(f"{self.where}: {type(exc).__name__}: {exc}") from None
        return count, sequence, decision

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:  # noqa: BLE001 - already broken: nothing left to close cleanly
                self.client.tloop.stop()
            self.client = None


def open_adapter(url: str, modbus: ModbusMap, opcua: OpcUaMap) -> PlcAdapter:
    endpoint = parse_plc_url(url)
    if endpoint.scheme == "modbus":
        return ModbusAdapter(endpoint, modbus)
    return OpcUaAdapter(endpoint, opcua)


class Forwarder:
    """Delivers the log's pending signals to the PLC in order, in its own thread."""

    def __init__(self, decisions: DecisionLog, adapter: PlcAdapter, *, retry_min_s: float = 0.05,
                 retry_max_s: float = 2.0, on_sent: Callable[[int, float], None] | None = None):
        self.log = decisions
        self.adapter = adapter
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.on_sent = on_sent  # (row id, perf_counter at the acknowledgement)
        self.connected = False
        self.outage_since: float | None = None
        self.delivered = 0
        self.reconciled = 0  # rows found already delivered when reading back
        self.last_error: str | None = None
        self.fatal: str | None = None  # why the forwarder stopped for good (the run ends with it)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeprune-plc", daemon=True)
        self._defects_sent = 0
        self.recent_errors: deque[str] = deque(maxlen=10)

    def start(self) -> None:
        self._defects_sent = self.log.defects_sent()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.adapter.close()

    def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for the backlog to empty; the number still pending."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.log.backlog()
            if left == 0 or time.monotonic() >= deadline or self.fatal or not self._thread.is_alive():
                return left
            self._wake.set()
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def _values(self, signal: Signal) -> tuple[int, int, int, bool]:
        defect = signal.decision == "DEFECT"
        count = (self._defects_sent + (1 if defect else 0)) % 65536
        return count, signal.id & 0xFFFF, DECISION_CODES[signal.decision], defect

    def _down(self, error: str) -> None:
        if self.connected or self.outage_since is None:
            self.outage_since = time.time()
            backlog = self.log.backlog()
            self.log.alarm("plc_unreachable", f"{error}; {backlog} signal(s) kept pending, retrying")
            log.warning("PLC unreachable: %s (%d pending, retrying)", error, backlog)
        self.connected = False
        self.last_error = error
        self.recent_errors.append(error)

    def _connect(self) -> bool:
        try:
            self.adapter.connect()
            first = self.log.pending(1)
            if first:
                self._reconcile(first[0])
        except PlcUnavailable as exc:
            self._down(str(exc))
            return False
        if self.outage_since is not None:
            self.log.alarm("plc_restored", f"{self.adapter.name} PLC reachable again after "
                           f"{time.time() - self.outage_since:.1f} s; {self.log.backlog()} signal(s) to deliver")
        self.outage_since = None
        self.connected = True
        return True

    def _reconcile(self, signal: Signal) -> None:
        """The oldest pending signal may have reached the PLC just before a crash or a lost
        acknowledgement: if the PLC holds exactly its values, mark it sent without writing."""
        count, sequence, decision, _ = self._values(signal)
        if self.adapter.read_back() == (count, sequence, decision):
            self._mark(signal)
            self.reconciled += 1

    def _mark(self, signal: Signal) -> None:
        acked = time.perf_counter()
        self.log.mark_sent(signal.id)
        if signal.decision == "DEFECT":
            self._defects_sent += 1
        self.delivered += 1
        if self.on_sent is not None:
            self.on_sent(signal.id, acked)

    def _run(self) -> None:
        try:
            self._deliver()
        except Exception as exc:  # noqa: BLE001 - a wrong node id, a broken database: end the run, loudly
            self.fatal = str(exc) if isinstance(exc, EdgepruneError) else f"{type(exc).__name__}: {exc}"
            try:
                self.log.alarm("plc_forwarder_failed", self.fatal)
            except Exception:  # noqa: BLE001 - the database itself may be what failed
                pass

    def _deliver(self) -> None:
        delay = self.retry_min_s
        while not self._stop.is_set():
            if not self.connected and not self._connect():
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_min_s
            batch = self.log.pending(256)
            if not batch:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            for signal in batch:
                if self._stop.is_set():
                    return
                count, sequence, decision, reject = self._values(signal)
                try:
                    self.adapter.write(count, sequence, decision, reject)
                except PlcUnavailable as exc:  # outcome unknown: read back before writing again
                    self._down(str(exc))
                    break
                self._mark(signal)
