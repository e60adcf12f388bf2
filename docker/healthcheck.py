"""The image's HEALTHCHECK: exit 0 when the server on $SK_PORT answers 200 on /readyz (warmed up), else 1.

Standard library only, so it runs in any image that has the package's Python.
"""

import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('SK_PORT', '8000')}/readyz"
try:
    with urllib.request.urlopen(url, timeout=float(os.environ.get("SK_HEALTHCHECK_TIMEOUT", "4"))) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:  # HTTPError (503 while warming up) is a URLError
    print(f"not ready: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
