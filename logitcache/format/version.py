"""The cache format version. Bump on any change an older reader would misread."""

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
ALIGNMENT = "next-token"  # row t holds the teacher distribution for the token at t+1
