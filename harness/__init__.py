"""mambamia-harness: benchmark and ablation harness for MambaMia video-token compressors."""

__version__ = "0.1.0"
