"""`edgeprune station run`: the inspection station beside the conveyor (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeprune.cli.app import app, console
from edgeprune.cli.common import log, warn

station_app = typer.Typer(
    help="The inspection station: classify each part's image, log it, signal the PLC, report upstream.",
    no_args_is_help=True,
)
app.add_typer(station_app, name="station")


@station_app.command("run")
def run(
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="station.toml (see configs/station.toml); the flags below override it.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="The exported .onnx artifact.")] = None,
    source: Annotated[Optional[str], typer.Option(
        "--source", help="replay:DIR (class-folder tree, the conveyor simulator), folder:DIR (new files "
        "as a camera drops them) or camera:N (OpenCV).")] = None,
    rate: Annotated[Optional[float], typer.Option(
        "--rate", help="Images per second for replay and camera (default: as fast as possible).")] = None,
    max_images: Annotated[Optional[int], typer.Option(
        "--max-images", help="End after N new decisions.")] = None,
    ok_classes: Annotated[Optional[str], typer.Option(
        "--ok-classes", help="Comma-separated classes that pass (OK); every other class is a DEFECT "
        "(default: the config's ok_classes, else the OK classes of the model's operating point).")] = None,
    review_below: Annotated[Optional[float], typer.Option(
        "--review-below", help="A top probability below P sends the part to a person (REVIEW).")] = None,
    fallback_model: Annotated[Optional[Path], typer.Option(
        "--fallback-model", help="A larger model that re-checks uncertain parts before REVIEW.")] = None,
    plc: Annotated[Optional[str], typer.Option(
        "--plc", help="modbus://HOST:PORT?unit=1 or opcua://HOST:PORT (default: no PLC).")] = None,
    mqtt: Annotated[Optional[str], typer.Option(
        "--mqtt", help="mqtt://HOST:PORT/TOPIC for summaries every --mqtt-interval seconds.")] = None,
    mqtt_interval: Annotated[Optional[float], typer.Option(
        "--mqtt-interval", help="Seconds between MQTT summaries (default 10).")] = None,
    db: Annotated[Optional[Path], typer.Option(
        "--db", help="The SQLite decision log (default station.db); a restart continues it.")] = None,
    drain_timeout: Annotated[Optional[float], typer.Option(
        "--drain-timeout", help="On exit, wait up to S seconds for pending PLC signals; the rest stay "
        "pending in the database and go first at the next start (default 5).")] = None,
    runtime: Annotated[Optional[str], typer.Option(
        "--runtime", help="onnxruntime (default), openvino or auto.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Inference threads (default 1).")] = None,
    http: Annotated[Optional[str], typer.Option(
        "--http", help="HOST:PORT for the dashboard and its API, e.g. 127.0.0.1:8080 (loopback "
        "unless you name another address); the token for changes comes from [dashboard] token or "
        "EDGEPRUNE_STATION_TOKEN.")] = None,
    station_id: Annotated[Optional[str], typer.Option(
        "--station-id", help="This station's name in the fleet (default: the host name); its decision "
        "log goes upstream over --mqtt (docs/fleet.md).")] = None,
    line_label: Annotated[Optional[str], typer.Option(
        "--line", help="The production line's label, for the fleet.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON.")] = False,
) -> None:
    """Run the station until the source ends, --max-images, or Ctrl-C / SIGTERM (the image in flight
    is decided and logged; pending PLC signals stay in the database)."""
    from edgeprune.station import Station, load_config

    overrides = {
        "model": model, "source": source, "rate": rate, "max_images": max_images,
        "ok_classes": ok_classes, "review_below": review_below, "fallback_model": fallback_model,
        "plc": plc, "mqtt": mqtt, "mqtt_interval_s": mqtt_interval, "db": db,
        "drain_timeout": drain_timeout, "runtime": runtime, "threads": threads, "http": http,
        "station_id": station_id, "line": line_label,
    }
    cfg = load_config(config, overrides)

    def progress(status: dict) -> None:
        plc_part = ""
        if status["plc"] is not None:
            plc_part = (f", PLC {'up' if status['plc']['connected'] else 'DOWN'} "
                        f"backlog {status['plc']['backlog']}")
        counts = status["this_run"]
        log(f"{status['decided_this_run']} decided ({counts['OK']} OK, {counts['DEFECT']} DEFECT, "
            f"{counts['REVIEW']} REVIEW, {counts['ERROR']} ERROR), p99 {status['latency_ms_p99'] or 0:.1f} ms"
            f"{plc_part}")

    try:
        station = Station(cfg, on_progress=progress)
    except KeyboardInterrupt:  # Ctrl-C while the model loads: nothing decided yet
        log("interrupted before the first image")
        raise typer.Exit(130) from None
    log(f"station: {station.source.name} -> {cfg.plc or 'no PLC'}, model {station.start_model.path.name} "
        f"({station.status()['model_sha256'][:12]}), log {cfg.db}")
    if station.start_model.origin != "config" or "accepted" in station.start_model.detail:
        log(f"model: {station.start_model.detail}")
    if cfg.http is not None:
        log(f"dashboard: http://{cfg.http}/")
    for warning in station.warnings:
        warn(warning)
    try:
        result = station.run()
    finally:
        station.close()
    mqtt_problem = _mqtt_problem(result.mqtt)
    if mqtt_problem:
        warn(mqtt_problem)
    if json_out:
        console.print_json(json.dumps(result.to_dict()))
        return
    c = result.counts
    console.print(f"{result.decided} decided in {result.elapsed_s:.1f} s ({c['OK']} OK, {c['DEFECT']} DEFECT, "
                  f"{c['REVIEW']} REVIEW, {c['ERROR']} ERROR), {result.skipped} already in the log; "
                  f"ended by {result.ended_by}")
    if result.latency_ms_p99 is not None:
        line = f"decision latency p50 {result.latency_ms_p50:.1f} ms, p99 {result.latency_ms_p99:.1f} ms"
        if result.plc_latency_ms_p99 is not None:
            line += (f"; to PLC acknowledgement p50 {result.plc_latency_ms_p50:.1f} ms, "
                     f"p99 {result.plc_latency_ms_p99:.1f} ms")
        console.print(line + f" ({cfg.threads} thread{'s' if cfg.threads > 1 else ''})")
    if result.pending_left:
        warn(f"{result.pending_left} PLC signal(s) still pending in {cfg.db}: delivered first at the next start")


def _mqtt_problem(link: dict | None) -> str | None:
    """What the run's summary must say about the broker: down all along, or summaries unsent."""
    if link is None:
        return None
    if not link["ever_connected"]:
        return (f"the MQTT broker {link['broker']} was unreachable for the whole run: "
                f"{link['summaries_unsent']} summary(ies) never sent")
    if link["summaries_unsent"]:
        state = "up" if link["connected"] else "down"
        return (f"{link['summaries_unsent']} MQTT summary(ies) not acknowledged by {link['broker']} at exit "
                f"(broker {state})")
    return None
