"""Where the project's small real datasets live: `shared/data` beside the repository (CI clones it there).

`RAYGEN_SHARED_DATA` overrides the location; tests that need these files skip with a reason when absent.
"""

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("RAYGEN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
