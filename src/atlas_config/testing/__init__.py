"""Test your app against a real Key Vault protocol, with no Azure: the emulator and its helpers.

Example::

    from atlas_config.testing import KeyVaultEmulator

    with KeyVaultEmulator() as kv:
        kv.set_secret("signing-secret", "test-value")
        os.environ.update(kv.environ())

The pytest plugin (installed with ``atlas-config[testing]``) provides the
``keyvault_emulator`` and ``production_keyvault`` fixtures.
"""

from ._emulator import Fault, KeyVaultEmulator, RequestRecord
from ._state import FakeClock, reset

__all__ = ["FakeClock", "Fault", "KeyVaultEmulator", "RequestRecord", "reset"]
