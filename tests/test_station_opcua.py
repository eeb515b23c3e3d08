"""The OPC UA adapter against a real asyncua server on 127.0.0.1: the station writes the same
three values as over Modbus (DEFECT count, sequence id, decision) to the configured nodes."""

from __future__ import annotations

import logging

import pytest

from asyncua import ua
from asyncua.sync import Server
from station_support import db_rows, free_port, make_replay, station_config

from edgeprune.station import OpcUaMap, Station

NODES = OpcUaMap(count_node="ns=2;s=line1.defects", sequence_node="ns=2;s=line1.sequence",
                 decision_node="ns=2;s=line1.decision")


def start_opcua_server(port: int) -> tuple[Server, dict]:
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    server = Server()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plc/")
    index = server.register_namespace("urn:edgeprune:test-plc")
    assert index == 2
    plc = server.nodes.objects.add_object(ua.NodeId("line1", index), "line1")
    nodes = {}
    for key, node_id in (("count", NODES.count_node), ("sequence", NODES.sequence_node),
                         ("decision", NODES.decision_node)):
        variant = ua.VariantType.UInt16 if key == "decision" else ua.VariantType.UInt32
        node = plc.add_variable(ua.NodeId.from_string(node_id), key, ua.Variant(0, variant))
        node.set_writable()
        nodes[key] = node
    server.start()
    return server, nodes


@pytest.fixture(scope="module")
def opcua_plc():
    """(port, nodes) of a real asyncua server on 127.0.0.1, started once for this file (~2 s)."""
    port = free_port()
    server, nodes = start_opcua_server(port)
    yield port, nodes
    server.stop()


def test_opcua_adapter_writes_the_three_values(tile_model, opcua_plc, tmp_path):
    port, nodes = opcua_plc
    replay = make_replay(tile_model, tmp_path / "replay", 12)
    db = tmp_path / "station.db"
    cfg = station_config(tile_model, replay, db, plc=f"opcua://127.0.0.1:{port}/plc/", opcua=NODES)
    result = Station(cfg).run()
    rows = db_rows(db)
    assert result.decided == len(rows) == 24 and result.pending_left == 0
    assert {r["plc_status"] for r in rows} == {"sent"}
    defects = sum(r["decision"] == "DEFECT" for r in rows)
    assert nodes["count"].read_value() == defects > 0
    assert nodes["sequence"].read_value() == rows[-1]["id"]
    assert nodes["decision"].read_value() == {"OK": 0, "DEFECT": 1, "REVIEW": 2}[rows[-1]["decision"]]
    assert nodes["decision"].read_data_type_as_variant_type() == ua.VariantType.UInt16  # kept its type


def test_unknown_opcua_node_is_a_clear_error(opcua_plc):
    from edgeprune.errors import EdgepruneError
    from edgeprune.station.config import parse_plc_url
    from edgeprune.station.plc import OpcUaAdapter

    port, _ = opcua_plc
    adapter = OpcUaAdapter(parse_plc_url(f"opcua://127.0.0.1:{port}/plc/"),
                           OpcUaMap(count_node="ns=2;s=no.such.node"))
    try:
        adapter.connect()
    except EdgepruneError as exc:
        assert "ns=2;s=no.such.node" in str(exc)
    else:
        raise AssertionError("a missing node must be refused at connect")
    finally:
        adapter.close()


def test_station_with_a_wrong_node_ends_with_a_clear_error(tile_model, opcua_plc, tmp_path):
    from edgeprune.errors import EdgepruneError

    port, _ = opcua_plc
    replay = make_replay(tile_model, tmp_path / "replay", 3)
    cfg = station_config(tile_model, replay, tmp_path / "station.db", plc=f"opcua://127.0.0.1:{port}/plc/",
                         opcua=OpcUaMap(count_node="ns=2;s=line9.defects"), rate=20)
    with pytest.raises(EdgepruneError, match="ns=2;s=line9.defects"):
        Station(cfg).run()
    rows = db_rows(tmp_path / "station.db")
    assert rows and {r["plc_status"] for r in rows} == {"pending"}  # kept for a fixed config
