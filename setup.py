"""The wheel's packages; everything else about the project is in pyproject.toml.

The repository's configs/ folder ships as mv2v_jax/configs: the library reads configs at run time (the
DINOv2 presets of models.build, the VAE presets of aot, convert_weights.random), and a wheel user loads
them by bare name, `load_config("recammaster_nvs.py")`, as `configs/recammaster_nvs.py` loads in a checkout.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["mv2v_jax*", "convert_weights*"]), "mv2v_jax.configs"],
    package_dir={"mv2v_jax.configs": "configs"},
)
