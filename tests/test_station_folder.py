"""The folder source: files that arrived while the station was down are decided at start, new
files are decided as a camera drops them (written in place, or renamed in), none twice."""

from __future__ import annotations

import os
import shutil
import threading
import time

from station_support import db_rows, station_config

from edgeprune.station import Station


def test_folder_source_picks_up_old_and_new_files(tile_model, tmp_path):
    _, by_class = tile_model
    images = [p for paths in by_class.values() for p in paths[:3]]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in images[:2]:  # dropped while the station was down
        shutil.copy(path, inbox / f"old-{path.name}")
    db = tmp_path / "station.db"
    cfg = station_config(tile_model, tmp_path, db, source=f"folder:{inbox}", max_images=len(images))
    station = Station(cfg)
    thread = threading.Thread(target=station.run)
    thread.start()
    try:
        time.sleep(1.0)  # watching (a file written while the start-up scan runs would be taken half-done)
        for i, path in enumerate(images[2:]):
            if i % 2:  # the safe way: write elsewhere, rename into the folder
                shutil.copy(path, tmp_path / "tmp.part")
                os.replace(tmp_path / "tmp.part", inbox / f"new-{path.name}")
            else:  # written in place (taken when the writer closes it)
                with open(inbox / f"new-{path.name}", "wb") as f:
                    data = path.read_bytes()
                    f.write(data[: len(data) // 2])
                    f.flush()
                    time.sleep(0.1)  # half a file must not be decided
                    f.write(data[len(data) // 2:])
            time.sleep(0.05)
        thread.join(30)
        assert not thread.is_alive(), "the station did not see every file"
    finally:
        station.stop()
        thread.join(10)
    rows = db_rows(db)
    assert sorted(os.path.basename(r["path"]) for r in rows) == sorted(p.name for p in inbox.iterdir())
    assert not [r for r in rows if r["decision"] == "ERROR"], "a half-written file was decided"
    assert all(r["true_class"] is None for r in rows)
    # A restart decides nothing again.
    again = Station(station_config(tile_model, tmp_path, db, source=f"folder:{inbox}"))
    thread = threading.Thread(target=again.run)
    thread.start()
    time.sleep(1.0)
    again.stop()
    thread.join(10)
    assert len(db_rows(db)) == len(images)
