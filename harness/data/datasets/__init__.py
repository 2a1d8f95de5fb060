"""Training datasets as plug-ins (like lmms-eval tasks): ``synthetic`` and ``llava_video``.

``get_dataset(name)`` returns the plug-in, ``build_manifest(data_cfg)`` the items a run trains on,
``dataset_identity(data_cfg)`` their content hash (``<dataset>:<hash>``). See :mod:`.base` for the
contract a new dataset implements and ``register_dataset`` to add one.
"""

from harness.data.datasets import llava_video, synthetic_suite  # noqa: F401  (the plug-ins register themselves)
from harness.data.datasets.base import (
    DATASETS,
    DatasetPlugin,
    FileManifest,
    ListManifest,
    Manifest,
    build_manifest,
    dataset_identity,
    get_dataset,
    register_dataset,
)

__all__ = ["DATASETS", "DatasetPlugin", "FileManifest", "ListManifest", "Manifest", "build_manifest",
           "dataset_identity", "get_dataset", "register_dataset"]
