"""Training tools for strek: the S-TREK detector and descriptor (see tools/train/README.md)."""
