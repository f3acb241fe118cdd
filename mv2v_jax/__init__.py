"""Memory-V2V in JAX: memory-augmented video-to-video diffusion on Wan backbones."""

import glob
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

__version__ = "0.1.0"


def has_tpu_devices() -> bool:
    """Whether this host has TPU chips to drive: libtpu opens them as /dev/accel<n> (TPU v4 and before)
    or as VFIO groups, /dev/vfio/<n> (v5e and after). Other VFIO users make it True too (harmless: JAX
    then chooses, as it does by default)."""
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _leave_platforms_to_jax() -> bool:
    """Whether JAX should choose its platforms: they are chosen already, the host has TPU chips, or a PJRT
    plugin (a CUDA or ROCm build of JAX, whose platform JAX knows) is installed."""
    jax = sys.modules.get("jax")
    if os.environ.get("JAX_PLATFORMS") or (jax is not None and jax.config.jax_platforms):
        return True
    if has_tpu_devices():
        return True
    namespace = importlib.util.find_spec("jax_plugins")  # where JAX finds PJRT plugins, as entry points too
    plugins = list(pkgutil.iter_modules(namespace.submodule_search_locations)) if namespace else []
    return bool(plugins or importlib.metadata.entry_points(group="jax_plugins"))


# libtpu is installed to compile for TPU topologies on any host (the `tpu` extra; aot/ loads it itself).
# Left alone, JAX would also start it as a backend on a host without TPU chips, where it prints start-up
# errors (no TPU worker hostnames, no host bounds) a user would take for failures. Without TPU chips or a
# GPU plugin the CPU is all there is: use it. Through the environment while JAX is not imported yet, so
# that importing the package (a CLI's --help) does not import JAX.
if not _leave_platforms_to_jax():
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    else:
        os.environ["JAX_PLATFORMS"] = "cpu"
