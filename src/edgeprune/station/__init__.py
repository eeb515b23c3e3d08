"""The inspection station: images in, OK / DEFECT / REVIEW out, to a PLC, nothing lost.

Torch-free: it runs exported ONNX artifacts through `edgeprune.runtime` (ONNX Runtime or
OpenVINO); `pip install edgeprune[station]` adds pymodbus, asyncua, paho-mqtt and watchdog.

    from edgeprune.station import Station, load_config
    with Station(load_config("station.toml", {"max_images": 100})) as station:
        result = station.run()

One module per concern: config (the settings), sources (replay, folder, camera), decision (the
rule and the cascade), log (SQLite: decisions and the PLC's outbox), plc (Modbus TCP, OPC UA,
store-and-forward), mqtt (summaries upstream), runner (the Station and its main loop).
"""

from edgeprune.station.config import ModbusMap, OpcUaMap, StationConfig, load_config
from edgeprune.station.decision import Decider, LoadedModel, Verdict
from edgeprune.station.log import COLUMNS, DecisionLog
from edgeprune.station.plc import Forwarder, ModbusAdapter, OpcUaAdapter, PlcAdapter, open_adapter
from edgeprune.station.runner import RunResult, Station

__all__ = [
    "COLUMNS", "Decider", "DecisionLog", "Forwarder", "LoadedModel", "ModbusAdapter", "ModbusMap",
    "OpcUaAdapter", "OpcUaMap", "PlcAdapter", "RunResult", "Station", "StationConfig", "Verdict",
    "load_config", "open_adapter",
]
