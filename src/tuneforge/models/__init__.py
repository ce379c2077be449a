"""Models: pull, import (HF folder, hub id, GGUF), describe, load, merge/export."""
