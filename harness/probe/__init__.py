"""The probe protocol: the compressor under test with a fixed read-out in place of the LLM.

A fast protocol beside the LMM one (``protocol: probe`` in a RunConfig or a study's ``base``): it measures
what a compressor keeps on the fixed-target families of the compress group, in CPU minutes, where the tiny
LMM first has to learn to read. Paper-scale studies keep ``protocol: lmm``. See docs/lmm.md.

    python -m harness.probe CONFIG [key=value ...]     # fit + score one run, print its accuracy
"""

from harness.probe.run import fit, score, train_and_evaluate

__all__ = ["fit", "score", "train_and_evaluate"]
