"""faceatlas: what the faces of a geotagged photo collection look like, region by region."""

__version__ = "0.1.0"
