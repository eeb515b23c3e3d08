"""`edgeprune fleet serve | status`: the central side of many stations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeprune.cli.app import app, console
from edgeprune.cli.common import log

fleet_app = typer.Typer(
    help="The fleet: every station's decisions, labels, samples and drift in one database, and a page.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")

ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="fleet.toml (keys: mqtt, db, http, data, token, stations, offline_after_s); flags override it.")]
DbOpt = Annotated[Optional[str], typer.Option(
    "--db", help="The fleet database: a SQLite file (default fleet.db) or postgresql://USER:PASS@HOST:PORT/DB.")]


@fleet_app.command("serve")
def serve(
    config: ConfigOpt = None,
    mqtt: Annotated[Optional[str], typer.Option(
        "--mqtt", help="mqtt://HOST:PORT/FILTER: the broker and the topic filter the stations publish "
        "under (default mqtt://127.0.0.1:1883/factory/#).")] = None,
    db: DbOpt = None,
    http: Annotated[Optional[str], typer.Option(
        "--http", help="HOST:PORT of the fleet page and /api/fleet (default 127.0.0.1:8090, loopback); "
        "the token for changes comes from the config's token or EDGEPRUNE_FLEET_TOKEN.")] = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Where labelled images go, as DATA/<class>/<sha256>.<ext> (default fleet-data): "
        "a class-folder tree that train, prune and evaluate read directly.")] = None,
) -> None:
    """Subscribe to the stations' topics, store every batch exactly once, serve the fleet page,
    until Ctrl-C / SIGTERM."""
    from edgeprune.fleet import load_config
    from edgeprune.fleet.server import FleetServer
    from edgeprune.fleet.store import display_url

    cfg = load_config(config, {"mqtt": mqtt, "db": db, "http": http, "data": data})
    server = FleetServer(cfg)  # the database is reached and the port bound here, or `error:`

    def ready() -> None:
        log(f"fleet: {cfg.mqtt} -> {display_url(cfg.db)}, labelled images in {cfg.data}")
        if server.http is not None:
            log(f"fleet page: {server.http.url}")

    server.serve_forever(on_ready=ready)
    counts = dict(server.ingestor.counts)
    log(f"stopped; messages this run: {json.dumps(counts) if counts else 'none'}")


@fleet_app.command("status")
def status(
    config: ConfigOpt = None,
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print /api/fleet's JSON instead of tables.")] = False,
) -> None:
    """Every station's figures, then the newest retrains and where the active (else the newest)
    roll-out stands on each station, read from the fleet database (no server needed)."""
    from rich.table import Table

    from edgeprune.fleet import load_config
    from edgeprune.fleet.overview import LoopView, config_secrets, fleet_document
    from edgeprune.fleet.registry import models_dir_for
    from edgeprune.fleet.store import FleetStore

    cfg = load_config(config, {"db": db, "http": None} if config is None else {"db": db})
    if db is None and config is None and not Path(cfg.db).is_file():
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError(f"no fleet database at {cfg.db}: pass --db PATH|postgresql://... or --config")
    store = FleetStore(cfg.db, cfg.data)
    try:
        figures = store.figures(offline_after_s=cfg.offline_after_s)
        overview = LoopView(store.engine, models_dir_for(cfg.data)).read(running=figures.models)
    finally:
        store.close()
    if json_out:
        console.print_json(json.dumps(fleet_document(figures, overview, cfg)))
        return
    pct = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    table = Table(title=f"fleet: {len(figures.stations)} station(s), {figures.ingest_errors} bad payload(s)")
    for name in ("station", "line", "last seen", "decisions", "images/h", "defect", "review", "p50/p99 ms",
                 "PLC backlog", "model", "live acc.", "drift", "alarms"):
        table.add_column(name)
    for s in figures.stations:
        latency = "–" if s.latency_ms_p50 is None else f"{s.latency_ms_p50:.1f}/{s.latency_ms_p99:.1f}"
        table.add_row(s.station_id, s.line or "–", f"{s.silent_s:.0f} s ago", str(s.images), str(s.images_last_hour),
                      pct(s.defect_rate_last_hour), pct(s.review_rate_last_hour), latency,
                      "–" if s.plc_backlog is None else str(s.plc_backlog),
                      (s.model_sha256 or "–")[:12], f"{pct(s.live_accuracy)} of {s.reviewed}" if s.reviewed else "–",
                      s.drift_state or "–", "; ".join(s.alarms) or "none")
    console.print(table)
    _print_loop(overview, config_secrets(cfg))


RETRAINS_PRINTED = 5


def _print_loop(overview, secrets: list[str]) -> None:
    """`fleet status`'s second half: the newest retrains and the current roll-out per station.
    What stations answered goes in as rich Text (a bracket in it is not markup), tokens removed."""
    import time

    from rich.table import Table
    from rich.text import Text

    from edgeprune.fleet.overview import redact

    def free_text(value: str) -> Text:  # every text a station or a run wrote goes through here
        return Text(redact(value, secrets))

    stamp = lambda ts: "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))  # noqa: E731
    retrains = overview.retrains[:RETRAINS_PRINTED]
    table = Table(title=f"retrains: the newest {len(retrains)}" if retrains else "retrains: none yet")
    for name in ("#", "trigger", "started", "state", "fleet labels", "model", "why / error"):
        table.add_column(name)
    for r in retrains:
        table.add_row(str(r.id), r.trigger, stamp(r.started_ts), r.state,
                      "–" if r.fleet_labels is None else str(r.fleet_labels), (r.model_sha256 or "–")[:12],
                      free_text(r.error or r.detail or "–"))
    console.print(table)
    r = overview.current_rollout()
    if r is None:
        console.print("roll-outs: none yet")
        return
    stages = " -> ".join(f"[{s}]" if s == r.stage else s for s in r.stages)
    title = (f"roll-out {r.id}: {r.model_name or ''} {r.model_sha256[:12]} {r.state} ({stages})"
             + (f": {r.reason}" if r.reason else ""))
    table = Table(title=free_text(title))
    for name in ("station", "wave", "state", "figures", "error"):
        table.add_column(name)
    for s in r.stations:
        f = s.figures or {}
        shown = []
        if f.get("agreement") is not None:
            shown.append(f"agreement {f['agreement']:.3f} over {f.get('images')} images")
        if f.get("after"):
            rate = f["after"].get("defect_rate")
            shown.append(f"defect rate {'–' if rate is None else f'{rate:.3f}'} over {f['after'].get('images')} images")
        table.add_row(s.station_id, "canary" if s.wave == 0 else f"wave {s.wave}", s.state,
                      "; ".join(shown) or "–", free_text(s.last_error or ""))
    console.print(table)


def _registry(cfg):
    from edgeprune.fleet.registry import ModelRegistry, models_dir_for
    from edgeprune.fleet.store import make_engine

    engine = make_engine(cfg.db)
    return ModelRegistry(engine, models_dir_for(cfg.data)), engine


@fleet_app.command("register")
def register(
    model: Annotated[Path, typer.Argument(help="The candidate: an ONNX file with edgeprune's metadata.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    acceptance: Annotated[Optional[Path], typer.Option(
        "--acceptance", help="The frozen acceptance set: a labelled class-folder tree no candidate trains on "
        "(default: the config's acceptance).")] = None,
    ok_classes: Annotated[Optional[str], typer.Option(
        "--ok-classes", help="Comma-separated good classes (default: the config's ok_classes, else the "
        "model's operating point's).")] = None,
    parent: Annotated[Optional[str], typer.Option("--parent", help="The registered model it descends from (sha256 prefix or file).")] = None,
    study_run: Annotated[Optional[str], typer.Option("--study-run", help="The study run that made it.")] = None,
    data_fingerprint: Annotated[Optional[str], typer.Option(
        "--data-fingerprint", help="The training data's fingerprint (default: the one the model's metadata records).")] = None,
    fleet_labels: Annotated[Optional[int], typer.Option("--fleet-labels", min=0, help="Fleet-labelled images it was trained on.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the registry row as JSON.")] = False,
) -> None:
    """Judge a model on the frozen acceptance set (torch-free, as a station decides) and register it
    as a candidate in the fleet database's model registry."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.fleet import load_config

    cfg = load_config(config, {"db": db, "acceptance": acceptance})
    if cfg.acceptance is None:
        raise EdgepruneError("no acceptance set: pass --acceptance DIR or set acceptance in the fleet config")
    oks = tuple(c.strip() for c in ok_classes.split(",") if c.strip()) if ok_classes else cfg.ok_classes
    registry, engine = _registry(cfg)
    try:
        from edgeprune.outputs import file_sha256

        known = registry.find(file_sha256(model)) if model.is_file() else None
        if known is not None:
            log(f"{model.name} is already registered as {known.sha256[:12]} (state {known.state}); nothing changed")
        found = known or registry.register(model, acceptance=cfg.acceptance, ok_classes=oks, parent=parent,
                                  study_run=study_run, data_fingerprint=data_fingerprint, fleet_labels=fleet_labels)
    finally:
        engine.dispose()
    if json_out:
        console.print_json(json.dumps(found.to_dict()))
        return
    if known is not None:
        return
    log(f"registered {found.name} ({found.sha256[:12]}), state {found.state}: accuracy {found.accuracy:.3f}, "
        f"balanced {found.balanced_accuracy:.3f}, defect recall {found.defect_recall:.3f} on "
        f"{found.acceptance_images} acceptance images ({found.acceptance_defects} defects), "
        f"{found.latency_ms_p50:.2f} ms on {found.latency_device}, {found.size_bytes} bytes")


@fleet_app.command("models")
def list_models(
    config: ConfigOpt = None,
    db: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the registry (with every state change) as JSON.")] = False,
) -> None:
    """The model registry: every candidate, its acceptance figures and its state."""
    from dataclasses import asdict

    from rich.table import Table

    from edgeprune.fleet import load_config

    cfg = load_config(config, {"db": db, "http": None} if config is None else {"db": db})
    if db is None and config is None and not Path(cfg.db).is_file():
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError(f"no fleet database at {cfg.db}: pass --db PATH|postgresql://... or --config")
    registry, engine = _registry(cfg)
    try:
        found = registry.models()
        states = {m.sha256: registry.states(m.sha256) for m in found}
    finally:
        engine.dispose()
    if json_out:
        console.print_json(json.dumps([{**m.to_dict(), "states": [asdict(s) for s in states[m.sha256]]}
                                       for m in found]))
        return
    table = Table(title=f"model registry: {len(found)} model(s)")
    for name in ("sha256", "name", "state", "accuracy", "balanced", "defect recall", "latency ms", "size",
                 "parent", "fleet labels", "last change"):
        table.add_column(name)
    for m in found:
        last = states[m.sha256][-1] if states[m.sha256] else None
        table.add_row(m.sha256[:12], m.name or "–", m.state, f"{m.accuracy:.3f}", f"{m.balanced_accuracy:.3f}",
                      f"{m.defect_recall:.3f}", f"{m.latency_ms_p50:.2f}", str(m.size_bytes),
                      (m.parent_sha256 or "–")[:12], "–" if m.fleet_labels is None else str(m.fleet_labels),
                      last.reason if last else "–")
    console.print(table)


@fleet_app.command("rollout")
def rollout(
    model: Annotated[str, typer.Argument(help="A registered model: its file or a sha256 prefix (`fleet models`).")],
    config: Annotated[Path, typer.Option(
        "--config", help="fleet.toml with the [[stations]] (id, url, token or token_env) and [rollout] defaults.")],
    db: DbOpt = None,
    stations: Annotated[Optional[str], typer.Option(
        "--stations", help="Comma-separated station ids, in roll-out order (the first is the canary; default: "
        "every [[stations]] entry).")] = None,
    shadow_images: Annotated[Optional[int], typer.Option("--shadow-images", help="Live images each station "
                                                         "decides with the candidate in shadow first.")] = None,
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", help="Shadow decisions equal to "
                                                           "the running model's, at least this share.")] = None,
    canary_images: Annotated[Optional[int], typer.Option("--canary-images", help="Images a switched station "
                                                         "decides before the next wave switches.")] = None,
    waves: Annotated[Optional[int], typer.Option("--waves", help="The stations after the canary, in this many waves.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Drive the roll-out here until it ends: exit 0 when every "
                                       "station runs the model, 3 when it was stopped or rolled back.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="With --wait: give up waiting after "
                                                     "this many seconds (exit 4; the roll-out goes on).")] = None,
) -> None:
    """Shadow, canary, waves: switch the fleet's stations to a registered model, rolling every
    switched station back on a breach. State is in the fleet database: `fleet serve` (or a
    second `fleet rollout MODEL --wait`) resumes a roll-out whose driver stopped."""
    import os
    import socket

    from edgeprune.errors import EdgepruneError
    from edgeprune.fleet import load_config
    from edgeprune.fleet.rollout import Driver, Rollouts

    cfg = load_config(config, {"db": db})
    if not cfg.endpoints:
        raise EdgepruneError(f"{config} lists no [[stations]] tables (id, url, token or token_env)")
    known = [e.id for e in cfg.endpoints]
    chosen = [s.strip() for s in stations.split(",") if s.strip()] if stations else known
    unknown = [s for s in chosen if s not in known]
    if unknown or len(set(chosen)) != len(chosen) or not chosen:
        raise EdgepruneError(f"--stations: {', '.join(unknown) or 'repeated or empty'}; the config's stations are "
                             f"{', '.join(known)}")
    missing_token = [e.id for e in cfg.endpoints if e.id in chosen and not e.bearer_token()]
    if missing_token:
        raise EdgepruneError(f"no token for station(s) {', '.join(missing_token)}: set token or token_env "
                             "(and export the variable)")
    settings = cfg.rollout.with_overrides({"shadow_images": shadow_images, "min_agreement": min_agreement,
                                           "canary_images": canary_images, "waves": waves})
    registry, engine = _registry(cfg)
    rollouts = Rollouts(engine, registry)
    driver = Driver(rollouts, cfg, owner=f"cli-{socket.gethostname()}-{os.getpid()}")
    try:
        target = registry.resolve(model)
        active = [rollouts.get(i) for i in rollouts.active()]
        resumed = next((r for r in active if r.model_sha256 == target.sha256), None)
        if resumed is not None:
            rollout_id = resumed.id
            log(f"roll-out {rollout_id} of {target.sha256[:12]} is {resumed.state}: resuming it")
        else:
            rollout_id = rollouts.create(target.sha256, chosen, settings)
            log(f"roll-out {rollout_id}: {target.name} ({target.sha256[:12]}) to {', '.join(chosen)}")
        if not wait:
            log("`fleet serve` with this config drives it; `fleet rollout ... --wait` drives it here")
            return
        seen = [0]

        def show(r) -> None:
            events = rollouts.events(r.id)
            for event in events[seen[0]:]:
                log(f"  {event['kind']}: {event['detail']}")
            seen[0] = len(events)

        final = driver.drive(rollout_id, timeout_s=timeout, on_step=show)
    finally:
        driver.close()
        engine.dispose()
    if not final.finished:
        log(f"roll-out {final.id} is still {final.state} after {timeout:g} s; it goes on (fleet serve resumes it)")
        raise typer.Exit(4)
    if final.state == "done":
        log(f"done: every station ({', '.join(final.stations)}) runs {final.model_sha256[:12]}")
        return
    log(f"roll-out {final.id} {final.state}: {final.reason}")
    if final.figures:
        console.print_json(json.dumps(final.figures))
    raise typer.Exit(3)


@fleet_app.command("retrain")
def retrain(
    config: Annotated[Path, typer.Option(
        "--config", help="fleet.toml: db, data (the labelled tree), acceptance, ok_classes and the \\[retrain] "
        "table (study, runs, executor, ray_address, int8_max_drop, retrain_after_labels, retrain_after_drift_s, "
        "poll_s, rollout: true starts a roll-out of each candidate to the \\[[stations]]).")],
    study: Annotated[Optional[Path], typer.Option(
        "--study", help="The study config (TOML) to run; its \\[data] is the base data set, the fleet's labelled "
        "tree is added to the training split only (default: \\[retrain] study).")] = None,
    db: DbOpt = None,
    executor: Annotated[Optional[str], typer.Option(
        "--executor", help="local (here) or ray (one Ray task per experiment), as `study run`.")] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="An existing Ray cluster (with --executor ray), as `study run`.")] = None,
    auto: Annotated[bool, typer.Option(
        "--auto", help="Watch the triggers (\\[retrain] retrain_after_labels, retrain_after_drift_s) every poll_s "
        "and retrain when one is due, until Ctrl-C / SIGTERM.")] = False,
    max_runs: Annotated[Optional[int], typer.Option(
        "--max-runs", min=1, help="With --auto: stop after this many retrains.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the retrain's row and the registered model as JSON.")] = False,
) -> None:
    """Retrain and re-compress: run the study on the base data plus the fleet's labelled parts
    (training split only), export its recommendation to INT8 (verified, gated) and register it as
    a candidate judged on the frozen acceptance set. One retrain at a time, whoever starts it;
    every run is recorded in the fleet database and shown on the fleet page."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.fleet import load_config
    from edgeprune.fleet.retrain import Trigger, run_retrain, watch

    cfg = load_config(config, {"db": db})
    overrides = {"study": study, "executor": executor, "ray_address": ray_address}
    if ray_address is not None and (executor or cfg.retrain.executor) != "ray":
        raise EdgepruneError("--ray-address needs --executor ray")
    from dataclasses import replace

    cfg = replace(cfg, retrain=cfg.retrain.with_overrides(overrides))
    if auto:
        import signal
        import threading

        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            log(f"watching the retrain triggers every {cfg.retrain.poll_s:g} s (Ctrl-C stops)")
            ran = watch(cfg, stop=stop, max_runs=max_runs, log=log)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        log(f"stopped after {ran} retrain(s)")
        return
    if max_runs is not None:
        raise EdgepruneError("--max-runs needs --auto")
    outcome = run_retrain(cfg, Trigger("manual", "by hand (edgeprune fleet retrain)"), log=log)
    m = outcome.model
    if json_out:
        console.print_json(json.dumps({"retrain": outcome.record.to_dict(), "model": m.to_dict(),
                                       "experiment": outcome.experiment, "rollout_id": outcome.rollout_id}))
        return
    log(f"retrain {outcome.record.id}: registered {m.sha256[:12]} ({outcome.experiment}) as a candidate: accuracy "
        f"{m.accuracy:.3f}, balanced {m.balanced_accuracy:.3f}, defect recall {m.defect_recall:.3f} on "
        f"{m.acceptance_images} acceptance images, {m.latency_ms_p50:.2f} ms on {m.latency_device}, "
        f"{m.size_bytes} bytes, {m.fleet_labels} fleet label(s); "
        + (f"roll-out {outcome.rollout_id} started (`fleet serve` drives it)" if outcome.rollout_id is not None
           else f"`fleet rollout {m.sha256[:12]} --wait` rolls it out"))
