"""Every table's schema, in one place.

Schemas are written once as Arrow schemas (what the plain-Python cores produce) and turned
into Spark DDL for the adapters, so the two can never drift apart. Key columns keep the same
names in every table of the pipeline: photo_id, user_id, country, continent, title,
download_url.
"""

from __future__ import annotations

import pyarrow as pa

TS_UTC = pa.timestamp("us", tz="UTC")  # an instant (Spark TIMESTAMP)
TS_LOCAL = pa.timestamp("us")  # a wall-clock time with no zone (Spark TIMESTAMP_NTZ)

# ROOT/photos/: geotagged photos, typed and geocoded; partitioned by continent, country.
PHOTOS = pa.schema(
    [
        ("photo_id", pa.int64()),
        ("line_number", pa.int64()),  # 25-field layout only
        ("photo_hash", pa.string()),  # 25-field layout only
        ("user_id", pa.string()),  # Flickr NSID, e.g. 12345678@N00
        ("user_nickname", pa.string()),
        ("taken_at", TS_LOCAL),  # camera clock, zone unknown
        ("taken_at_bogus", pa.bool_()),  # a value was present but impossible, now null
        ("uploaded_at", TS_UTC),
        ("uploaded_at_bogus", pa.bool_()),
        ("capture_device", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("user_tags", pa.list_(pa.string())),
        ("machine_tags", pa.list_(pa.string())),
        ("longitude", pa.float64()),
        ("latitude", pa.float64()),
        ("accuracy", pa.int32()),  # Flickr's 1 (world) .. 16 (street)
        ("page_url", pa.string()),
        ("download_url", pa.string()),
        ("license_name", pa.string()),
        ("license_url", pa.string()),
        ("license_code", pa.string()),  # by, by-sa, by-nc-nd, ... from license_url
        ("server_id", pa.int32()),
        ("farm_id", pa.int32()),
        ("secret", pa.string()),
        ("original_secret", pa.string()),
        ("original_extension", pa.string()),
        ("marker", pa.int8()),
        ("place", pa.string()),  # nearest populated place (reverse_geocoder)
        ("admin1", pa.string()),
        ("place_km", pa.float64()),  # great-circle distance to that place
        ("far_from_place", pa.bool_()),
        ("country_name", pa.string()),
        ("source_file", pa.string()),
        ("country", pa.string()),  # ISO 3166 alpha-2
        ("continent", pa.string()),  # AF AN AS EU NA OC SA
    ]
)
PHOTOS_PARTITIONS = ("continent", "country")
# Repetitive text columns, worth dictionary-encoding in Parquet.
PHOTOS_DICTIONARY = ("user_id", "user_nickname", "capture_device", "license_name", "license_url",
                     "license_code", "original_extension", "place", "admin1", "country_name",
                     "source_file")  # fmt: skip

# ROOT/quarantine/ingest/: one row per line that could not be parsed.
QUARANTINE_INGEST = pa.schema(
    [
        ("source_file", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("photo_id", pa.int64()),  # when it could be read
        ("raw_length", pa.int64()),  # bytes in the original line
        ("raw_line", pa.string()),  # the line, cut to a bound, invalid UTF-8 replaced
    ]
)

# What each ingest task hands back to the driver: its lines counted by outcome. Rows go
# to Parquet from the tasks themselves (partwrite.py); the counts travel through Spark,
# which keeps only successful attempts' results, so the accounting is exactly-once.
INGEST_COUNTS = pa.schema([("kind", pa.string()), ("reason", pa.string()), ("n", pa.int64())])

# ROOT/images/: one row per photo the fetch stage was asked for; partitioned like photos.
# Statuses: fetch.IMAGE_TABLE_STATUSES. Only ok rows carry the image and its description.
IMAGES = pa.schema(
    [
        ("photo_id", pa.int64()),
        ("url", pa.string()),  # the URL requested (download_url or the --url-template)
        ("final_url", pa.string()),  # where redirects ended, when there were any
        ("status", pa.string()),
        ("detail", pa.string()),  # a short human reason when not ok
        ("http_status", pa.int32()),  # of the last response, when there was one
        ("attempts", pa.int32()),  # requests sent, retries and redirects included
        ("download_bytes", pa.int64()),  # body bytes received
        ("image", pa.binary()),  # the stored photo: as served, or oriented/resized
        ("image_bytes", pa.int64()),
        ("format", pa.string()),  # jpeg, png, webp (of the stored bytes)
        ("width", pa.int32()),  # of the stored image
        ("height", pa.int32()),
        ("orig_width", pa.int32()),  # as served
        ("orig_height", pa.int32()),
        ("sha256", pa.string()),  # of the stored bytes
        ("content_type", pa.string()),  # as the server claimed it
        ("seconds", pa.float64()),  # spent on this photo, fetch and checks
        ("fetched_at", TS_UTC),
        ("run_id", pa.string()),  # the fetch run that wrote the row
        ("country", pa.string()),
        ("continent", pa.string()),
    ]
)
IMAGES_PARTITIONS = PHOTOS_PARTITIONS

# What each fetch task hands back: its rows counted by status, with bytes and time.
FETCH_COUNTS = pa.schema(
    [
        ("status", pa.string()),
        ("n", pa.int64()),
        ("download_bytes", pa.int64()),
        ("image_bytes", pa.int64()),
        ("seconds", pa.float64()),  # summed per photo
    ]
)

_SPARK_TYPES = {
    pa.int8(): "TINYINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.string(): "STRING",
    pa.binary(): "BINARY",
    TS_UTC: "TIMESTAMP",
    TS_LOCAL: "TIMESTAMP_NTZ",
}


def spark_type(t: pa.DataType) -> str:
    """The Spark SQL type name of an Arrow type used in these schemas."""
    if pa.types.is_list(t):
        return f"ARRAY<{spark_type(t.value_type)}>"
    try:
        return _SPARK_TYPES[t]
    except KeyError:
        raise TypeError(f"no Spark type for Arrow type {t}") from None


def spark_ddl(schema: pa.Schema) -> str:
    """A Spark DDL string (`a BIGINT, b STRING, ...`) for an Arrow schema."""
    return ", ".join(f"`{f.name}` {spark_type(f.type)}" for f in schema)
