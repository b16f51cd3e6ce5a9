"""Read a TOML file with one clear error line when it is malformed."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lape_hub.errors import RegistryError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; a missing or malformed file raises RegistryError naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RegistryError(f"registry file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{path}: invalid TOML ({e})") from None
