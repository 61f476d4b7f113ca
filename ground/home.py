"""The home directory layout (``LORA_ROUTER_HOME``).

::

    <home>/
      base/                         pinned base model + tokenizer (Hugging Face format)
      base.lock.json                {name, version, sha256, files: {relpath: sha256}}
      adapters/<name>/<version>/    PEFT adapters (adapter_config.json + adapter_model.safetensors)
      registry/datasets/<id>.yaml   dataset cards
      registry/models/<id>.yaml     model cards (id = name@version)
      registry/runs/<id>.yaml       run manifests
      data/<dataset-id>/            dataset files (the bytes a dataset card hashes)
      routes.yaml                   initial route table
      log/                          embedded inference log (SQLite) and its spool
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lora_router.ground.ids import check_card_id, parse_adapter_id


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> Home:
        return cls(Path(path).expanduser().resolve())

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def base_lock(self) -> Path:
        return self.root / "base.lock.json"

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    def adapter_dir(self, adapter_id: str) -> Path:
        aid = parse_adapter_id(adapter_id)
        return self.adapters_dir / aid.name / aid.version

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def datasets_dir(self) -> Path:
        return self.registry_dir / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.registry_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.registry_dir / "runs"

    def dataset_card_path(self, dataset_id: str) -> Path:
        return self.datasets_dir / f"{check_card_id(dataset_id, 'dataset')}.yaml"

    def model_card_path(self, adapter_id: str) -> Path:
        parse_adapter_id(adapter_id)
        return self.models_dir / f"{adapter_id}.yaml"

    def run_manifest_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{check_card_id(run_id, 'run manifest')}.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.data_dir / check_card_id(dataset_id, "dataset")

    @property
    def routes_file(self) -> Path:
        return self.root / "routes.yaml"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def list_adapter_ids(self) -> list[str]:
        """Adapter ids with a directory under ``adapters/`` (registered or not)."""
        if not self.adapters_dir.is_dir():
            return []
        out = []
        for name_dir in sorted(self.adapters_dir.iterdir()):
            if not name_dir.is_dir():
                continue
            for ver_dir in sorted(name_dir.iterdir()):
                if (ver_dir / "adapter_config.json").is_file():
                    out.append(f"{name_dir.name}@{ver_dir.name}")
        return out
