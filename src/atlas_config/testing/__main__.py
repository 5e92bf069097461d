"""``python -m atlas_config.testing``: serve a local Key Vault emulator for development.

Example (shell)::

    $ python -m atlas_config.testing --secrets-file .env.secrets --port 8443
"""

import sys

from ._standalone import serve

if __name__ == "__main__":
    sys.exit(serve())
