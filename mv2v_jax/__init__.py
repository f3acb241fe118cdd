"""Memory-V2V in JAX: memory-augmented video-to-video diffusion on Wan backbones."""

import importlib.metadata
import importlib.util
import pkgutil

import jax

__version__ = "0.1.0"


def _leave_platforms_to_jax() -> bool:
    """Whether JAX should pick its platforms: they are set already, the host has TPU chips, or a PJRT
    plugin (a CUDA or ROCm build, whose platform JAX knows) is installed."""
    if jax.config.jax_platforms:  # JAX_PLATFORMS, or set by the caller
        return True
    try:  # JAX's own look at the PCI bus for TPU chips, the one its Cloud TPU set-up uses (not public API)
        from jax._src.hardware_utils import num_available_tpu_chips_and_device_id
    except ImportError:  # a later JAX: no telling, so JAX decides
        return True
    if num_available_tpu_chips_and_device_id()[0]:
        return True
    namespace = importlib.util.find_spec("jax_plugins")  # where JAX finds PJRT plugins, as entry points too
    plugins = list(pkgutil.iter_modules(namespace.submodule_search_locations)) if namespace else []
    return bool(plugins or importlib.metadata.entry_points(group="jax_plugins"))


# libtpu is installed for compiling to TPU topologies on any host (the `tpu` extra; aot/, which loads it
# itself). Left alone, JAX would also start it as a backend on a host without TPU chips, where it prints
# start-up errors (no TPU worker hostnames, no host bounds) a user would take for failures. Without TPU
# chips or a GPU plugin, the CPU is all there is: use it.
if not _leave_platforms_to_jax():
    jax.config.update("jax_platforms", "cpu")
