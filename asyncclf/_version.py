"""The installed package's version, in a module of its own so that nothing imports the
package root to read it (httpx's ``__version__.py``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asyncclf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
