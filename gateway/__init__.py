"""codeinterp's gateway: an OpenAI-shaped HTTP service over the sandbox library."""

from .app import create_app
from .composition import Gateway
from .settings import Settings

__all__ = ["Gateway", "Settings", "create_app"]
