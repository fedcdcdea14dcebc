"""Confidentiality of bundles: the sealed envelope (pure, :mod:`.sealed`) and the device
key pair on disk (IO shell, :mod:`.device_key`). See docs/security.md, *Encrypted bundles*."""

# constants the store needs without importing ``cryptography`` (kept lazy for idle RSS)
MAGIC = b"EDGESEAL"  # the first bytes of every sealed bundle
SEALED_FILE = "bundle.sealed"  # an installed sealed version: <store>/models/<n>/<v>/bundle.sealed
