"""The model repository: which models and versions the server serves, loaded from disk.

``PATH`` is either one model file (``.edgert``, or ``.onnx`` converted when loaded), served as
model ``<file stem>`` version ``1``, or a folder laid out as Triton's::

    repo/
      digits/
        config.json          # optional: instances, threads, max_batch_size, ...
        1/model.edgert
        2/model.onnx         # converted when loaded (needs the convert extra)
      other/
        1/model.edgert

Every version found is served (``"versions"`` in config.json can say ``"latest"`` or a list);
a request without a version gets the highest one. A poller re-reads the repository every
``poll_s`` seconds: a model whose files (or config.json) changed and then stayed unchanged for
one more poll is reloaded (the old versions finish their queued requests first), new models
are loaded and removed ones unloaded. A model unloaded through the API stays unloaded until it
is loaded through the API again.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
from dataclasses import dataclass, field
from typing import Any

from edgert.serve.metrics import Metrics, log
from edgert.serve.model import ModelConfig, ModelVersion
from edgert.serve.protocol import ProtocolError

__all__ = ["Repository"]

MODEL_FILES = ("model.edgert", "model.onnx")
CONFIG_FILE = "config.json"


@dataclass
class _Model:
    name: str
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    state: str = "UNAVAILABLE"
    reason: str = ""
    unloaded: bool = False  # by the API: the poller leaves it alone
    key: Any = None  # the files (and their stat) the loaded versions came from
    pending: Any = None  # a changed key seen once (reloaded if the next poll sees it again)
    failed: Any = None  # a key whose load failed (not retried until the files change)


def _stat(p: pathlib.Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class Repository:
    def __init__(self, path: str | os.PathLike, defaults: ModelConfig | None = None,
                 metrics: Metrics | None = None, poll_s: float = 2.0):
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such model file or repository folder: {path}")
        self.single = self.path.is_file()
        self.defaults = defaults or ModelConfig()
        self.defaults.validate("defaults")
        self.metrics = metrics
        self.poll_s = poll_s
        self._models: dict[str, _Model] = {}
        self._lock = threading.RLock()  # the dict and the models' fields
        self._load_lock = threading.Lock()  # one load / unload / reload at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._closers: list[threading.Thread] = []

    # ----- discovery ---------------------------------------------------------------------------
    def _scan(self) -> dict[str, pathlib.Path]:
        """Model name -> its folder (or, single-file mode, the file)."""
        if self.single:
            return {self.path.stem: self.path}
        try:
            entries = sorted(self.path.iterdir())
        except OSError as exc:
            log.error("cannot read the repository %s: %s", self.path, exc)
            return {}
        return {p.name: p for p in entries if p.is_dir() and not p.name.startswith(".")}

    def _files(self, name: str, where: pathlib.Path) -> tuple[ModelConfig, dict[str, pathlib.Path],
                                                                Any]:
        """The config, the version files to serve and the key (stats) of one model."""
        if self.single:
            return self.defaults, {"1": where}, (("1", str(where), _stat(where)),)
        cfg_path = where / CONFIG_FILE
        cfg_stat = _stat(cfg_path)
        config = self.defaults
        if cfg_stat is not None:
            try:
                obj = json.loads(cfg_path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{cfg_path}: {exc}") from None
            config = ModelConfig.from_json(obj, self.defaults, str(cfg_path))
        found: dict[str, pathlib.Path] = {}
        for vdir in where.iterdir():
            if vdir.is_dir() and vdir.name.isdigit():
                for fname in MODEL_FILES:
                    if (vdir / fname).is_file():
                        found[str(int(vdir.name))] = vdir / fname
                        break
        versions = sorted(found, key=int)
        if config.versions == "latest":
            versions = versions[-1:]
        elif isinstance(config.versions, list):
            versions = [v for v in versions if int(v) in config.versions]
        chosen = {v: found[v] for v in versions}
        key = (("config", str(cfg_path), cfg_stat),) + tuple(
            (v, str(p), _stat(p)) for v, p in chosen.items())
        return config, chosen, key

    # ----- loading -----------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every model found (at start); failures are logged and leave the model
        UNAVAILABLE (the server then reports not ready)."""
        for name in self._scan():
            try:
                self.load(name)
            except ProtocolError as exc:
                log.error("%s", exc)

    def load(self, name: str) -> None:
        """(Re)load every version of one model from disk (the API's load; also undoes an
        unload). Raises ProtocolError 404 for a name the repository does not have, 400 when
        the model cannot be loaded (the versions already loaded, if any, stay)."""
        where = self._scan().get(name)
        if where is None:
            raise ProtocolError(f"no model '{name}' in the repository {self.path}", 404)
        with self._load_lock:
            with self._lock:
                m = self._models.setdefault(name, _Model(name))
                m.unloaded = False
            self._reload(m, where)
            if m.state != "READY":
                raise ProtocolError(f"failed to load model '{name}': {m.reason}", 400)

    def _reload(self, m: _Model, where: pathlib.Path) -> None:
        key: Any = None
        try:
            try:
                config, files, key = self._files(m.name, where)
            except (OSError, ValueError) as exc:
                key = ("error", str(exc))
                raise
            if not files:
                raise ValueError(f"no version folder with {' or '.join(MODEL_FILES)} in {where}")
            new = {v: self._load_version(m.name, v, p, config) for v, p in files.items()}
        except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
            with self._lock:
                m.failed = key
                m.pending = None
                m.reason = f"{type(exc).__name__}: {exc}" if not isinstance(
                    exc, (ValueError, OSError)) else str(exc)
                if not m.versions:
                    m.state = "UNAVAILABLE"
            log.error("model '%s': load failed: %s", m.name, m.reason)
            return
        with self._lock:
            old = m.versions
            m.versions = new
            m.state, m.reason, m.key, m.pending, m.failed = "READY", "", key, None, None
        self._set_ready(m.name, new, old)
        self._close_later(old.values())
        log.info("model '%s': loaded version(s) %s", m.name, ", ".join(sorted(new, key=int)),
                 extra={"fields": {"model": m.name, "versions": sorted(new, key=int)}})

    def _load_version(self, name: str, version: str, path: pathlib.Path,
                      config: ModelConfig) -> ModelVersion:
        model: Any = str(path)
        if path.suffix.lower() == ".onnx":
            try:
                from edgert.converter import convert  # lazy: the convert extra (onnx)
            except ImportError as exc:
                raise ValueError(f"{path}: serving an .onnx model needs the convert extra "
                                 f"(pip install 'edgert[convert]'): {exc}") from None
            model = convert(str(path))
        else:
            # Read the bytes: a reload must not map a file that is rewritten in place later.
            model = path.read_bytes()
        return ModelVersion(name, version, model, config, self.metrics, source=str(path))

    def unload(self, name: str) -> None:
        """Stop serving every version of a model (queued requests still finish)."""
        with self._load_lock:
            with self._lock:
                m = self._models.get(name)
                if m is None:
                    raise ProtocolError(f"unknown model '{name}'", 404)
                old = m.versions
                m.versions = {}
                m.state, m.reason, m.unloaded, m.key = "UNAVAILABLE", "unloaded", True, None
            self._set_ready(name, {}, old)
            self._close_later(old.values())
        log.info("model '%s': unloaded", name)

    def _set_ready(self, name: str, new: dict, old: dict) -> None:
        if self.metrics is None:
            return
        for v in old:
            if v not in new:
                self.metrics.model_ready.labels(name, v).set(0)
        for v in new:
            self.metrics.model_ready.labels(name, v).set(1)

    def _close_later(self, versions) -> None:
        versions = list(versions)
        if not versions:
            return

        def close() -> None:
            for mv in versions:
                mv.close()

        t = threading.Thread(target=close, name="edgert-unload", daemon=True)
        t.start()
        with self._lock:
            self._closers = [c for c in self._closers if c.is_alive()] + [t]

    # ----- polling -----------------------------------------------------------------------------
    def poll_once(self) -> None:
        """One pass of the poller: reload changed models, load new ones, drop removed ones."""
        found = self._scan()
        with self._lock:
            known = dict(self._models)
        for name, m in known.items():
            if name not in found and m.versions:
                log.info("model '%s': removed from the repository", name)
                self.unload(name)
                with self._lock:
                    self._models.pop(name, None)
        for name, where in found.items():
            m = known.get(name)
            if m is not None and m.unloaded:
                continue
            if m is None:
                with self._load_lock:
                    with self._lock:
                        m = self._models.setdefault(name, _Model(name))
                    self._reload(m, where)
                continue
            try:
                _, _, key = self._files(name, where)
            except (OSError, ValueError) as exc:
                key = ("error", str(exc))
            if key == m.key or key == m.failed:
                m.pending = None
                continue
            if key != m.pending:  # changed: wait one more poll for it to settle
                m.pending = key
                continue
            log.info("model '%s': files changed, reloading", name)
            with self._load_lock:
                self._reload(m, where)

    def start_polling(self) -> None:
        if self.poll_s and self.poll_s > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name="edgert-poll",
                                            daemon=True)
            self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("repository poll failed")

    # ----- lookups -----------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> ModelVersion:
        with self._lock:
            m = self._models.get(name)
            if m is None:
                raise ProtocolError(f"unknown model '{name}'", 404)
            if not m.versions:
                raise ProtocolError(f"model '{name}' is not loaded ({m.state}"
                                    f"{': ' + m.reason if m.reason else ''})", 404)
            if not version:
                return m.versions[max(m.versions, key=int)]
            mv = m.versions.get(version)
            if mv is None:
                raise ProtocolError(f"model '{name}' has no version '{version}' (versions: "
                                    f"{', '.join(sorted(m.versions, key=int))})", 404)
            return mv

    def versions(self, name: str) -> list[str]:
        with self._lock:
            m = self._models.get(name)
            return sorted(m.versions, key=int) if m else []

    def ready(self) -> bool:
        with self._lock:
            return all(m.state == "READY" for m in self._models.values() if not m.unloaded)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        out = []
        with self._lock:
            models = dict(self._models)
        for name in sorted(set(self._scan()) | set(models)):
            m = models.get(name)
            if m is None:
                if not ready_only:
                    out.append({"name": name, "state": "UNAVAILABLE", "reason": "not loaded"})
                continue
            if m.versions:
                out += [{"name": name, "version": v, "state": "READY"}
                        for v in sorted(m.versions, key=int)]
                if m.reason and not ready_only:
                    out[-1]["reason"] = m.reason
            elif not ready_only:
                out.append({"name": name, "state": m.state, "reason": m.reason})
        return out

    def close(self) -> None:
        """Stop polling; every version finishes its queued requests, then is freed."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        with self._lock:
            versions = [mv for m in self._models.values() for mv in m.versions.values()]
            closers = list(self._closers)
        for mv in versions:
            mv.close()
        for t in closers:
            t.join()
