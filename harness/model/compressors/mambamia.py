"""Registry entry ``mambamia``: the MambaMia compressor (arXiv 2506.13564; v2, AAAI-26), its code in
:mod:`harness.model.compressor` and its config in :mod:`harness.model.mambamia_config`.

Presets name the designs that MambaMia v2's controlled five-way comparison uses (``ablations/five_way.yaml``
spells out the same fields), plus the v2 spatial design without the time-axis aggregator, whose token count
a matched budget can fix:

=================  ==========================================================================================
``proposed``       GPA pooling + bi-SSM mixing + the time-axis aggregator (relative delta sampling, half the frames)
``mambamia_v2``    GPA pooling + bi-SSM mixing, every frame kept (``proposed`` without the TAA)
``self_attention`` the same design with a Transformer block
``bimba``          BIMBA-like: bi-SSM over patches, queries initialised by average pooling and read out
``pooling``        no mixing: each period averaged, then pairs of frames averaged
``vanilla``        no compression: every patch token goes on, through the token-wise maps
=================  ==========================================================================================
"""

from __future__ import annotations

from harness.model.compressor import Compressor
from harness.model.mambamia_config import CompressorConfig
from harness.model.registry import register_compressor

_TAA_HALF = {"enabled": True, "sampling": "delta", "relative": True, "keep_ratio": 0.5}

PRESETS = {
    "proposed": {"block": "bi_ssm", "pooling": "gpa", "taa": _TAA_HALF},
    "mambamia_v2": {"block": "bi_ssm", "pooling": "gpa"},
    "self_attention": {"block": "transformer", "pooling": "gpa"},
    "bimba": {"block": "bi_ssm", "pooling": "query", "query_init": "mean"},
    "pooling": {"block": "identity", "pooling": "mean", "temporal": {"period": 2}},
    "vanilla": {"enabled": False},
}

register_compressor("mambamia", CompressorConfig, presets=PRESETS)(Compressor)
