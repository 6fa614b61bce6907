"""Package metadata comes from settings.ini (the nbdev 2 layout); no pkg_resources."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=["="])
config.read(here / "settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

licenses = {"apache2": "Apache-2.0"}  # an SPDX expression (setuptools >= 77 reads it; License classifiers are deprecated)
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature", "7 - Inactive"]
lic = licenses[cfg["license"]]


def _reqs(key):
    return cfg.get(key, "").split()


readme = here / "README.md"
setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else cfg["description"],
    long_description_content_type="text/markdown",
    license=lic,
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"])],
        "Intended Audience :: " + cfg["audience"].title(),
        "Natural Language :: " + cfg["language"].title(),
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
    keywords=cfg["keywords"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    packages=setuptools.find_namespace_packages(include=["quantlab", "quantlab.*"], exclude=["*.__pycache__"]),  # templates/ too
    include_package_data=True,
    package_data={"quantlab.reports": ["templates/*.ipynb", "assets/*"]},
    install_requires=_reqs("requirements"),
    extras_require={
        "dev": _reqs("dev_requirements"),
        "ib": _reqs("ib_requirements"),
        "dask": _reqs("dask_requirements"),
        "track": _reqs("track_requirements"),
        "samples": _reqs("samples_requirements"),
        "backtrader": _reqs("backtrader_requirements"),
        "bench": _reqs("bench_requirements"),
    },
    python_requires=">=" + cfg["min_python"],
    zip_safe=False,
    entry_points={"console_scripts": cfg["console_scripts"].split(), "nbdev": [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"]},
)
