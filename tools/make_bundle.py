"""Rebuild the bundled polyphonic data from the shared .mat files.

python tools/make_bundle.py ../shared/data/polyphonic src/rnnlab/data/bundled
"""

import json
import sys
from pathlib import Path

from rnnlab.data.polyphonic import build_bundle

if __name__ == "__main__":
    manifest = build_bundle(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(manifest, indent=2))
