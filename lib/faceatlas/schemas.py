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

# ROOT/faces/: one row per face found in an ok image; partitioned like photos.
# Landmarks are five (x, y) points in the photo's pixels, flattened: the image-left eye
# centre, the image-right eye centre, the nose tip, the image-left and image-right mouth
# corners (MTCNN's order; dlib's 68 points are reduced to these).
FACES = pa.schema(
    [
        ("face_id", pa.string()),  # "<photo_id>-<n>", n by descending face size
        ("photo_id", pa.int64()),
        ("user_id", pa.string()),
        ("detector", pa.string()),  # mtcnn, haar+mtcnn, haar+dlib, dlib
        ("box", pa.list_(pa.float32())),  # x, y, width, height in the photo's pixels
        ("landmarks", pa.list_(pa.float32())),  # 10 values, see above
        ("confidence", pa.float32()),  # the detector's score (MTCNN: a probability)
        ("eye_distance", pa.float32()),  # pixels between the eye centres, in the photo
        ("blur", pa.float32()),  # variance of the Laplacian of the aligned face's grey
        ("luminance", pa.float32()),  # mean luma (0-255) of the face's central region
        ("dark_share", pa.float32()),  # share of that region's pixels at luma <= 16
        ("saturation", pa.float32()),  # mean HSV saturation (0-1); ~0 for grey images
        ("yaw", pa.float32()),  # degrees, rough, from the landmarks
        ("pitch", pa.float32()),
        ("roll", pa.float32()),
        ("quality_pass", pa.bool_()),
        ("quality_failed", pa.list_(pa.string())),  # names of the checks that failed
        ("aligned", pa.binary()),  # PNG of the aligned face
        ("aligned_size", pa.int32()),  # its width = height
        ("alignment", pa.string()),  # ffhq, or template:<name>
        ("gender", pa.string()),  # female / male
        ("p_female", pa.float32()),
        ("age", pa.float32()),  # years, the expectation over the model's 0-80 bins
        ("age_group", pa.string()),  # young / old (split at --young-below)
        ("age_bin", pa.string()),  # FairFace: 0-2, 3-9, ..., 70+
        ("ita", pa.float32()),  # Individual Typology Angle, degrees
        ("skin_tone", pa.string()),  # very_light, light, intermediate, tan, brown, dark
        ("skin_pixels", pa.int32()),  # pixels the ITA was computed from
        ("ethnicity", pa.string()),  # only with a user-supplied --ethnicity-model
        ("ethnicity_p", pa.float32()),
        ("run_id", pa.string()),
        ("processed_at", TS_UTC),
        ("country", pa.string()),
        ("continent", pa.string()),
    ]
)
FACES_PARTITIONS = PHOTOS_PARTITIONS

# ROOT/face_photos/: one row per ok image the faces stage processed: what came of it.
# status: faces (at least one face kept), no_face, or quarantined (see reason).
FACE_PHOTOS = pa.schema(
    [
        ("photo_id", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),  # quarantined only: decode_error, internal_error, ...
        ("detail", pa.string()),
        ("detected", pa.int32()),  # faces the detector returned
        ("faces", pa.int32()),  # rows written to faces/ (after the policy and size checks)
        ("dropped", pa.list_(pa.string())),  # why each detected face was not kept
        ("seconds", pa.float64()),
        ("run_id", pa.string()),
        ("processed_at", TS_UTC),
        ("country", pa.string()),
        ("continent", pa.string()),
    ]
)
FACE_PHOTOS_PARTITIONS = PHOTOS_PARTITIONS

# ROOT/quarantine/faces/: one row per image that could not be processed.
QUARANTINE_FACES = pa.schema(
    [
        ("photo_id", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("run_id", pa.string()),
        ("country", pa.string()),
        ("continent", pa.string()),
    ]
)

# What each faces or project task hands back: its counts by key (runfiles.counts_batch).
TASK_COUNTS = pa.schema(
    [
        ("key", pa.string()),  # photos:<status>, quarantine:<reason>, faces, dropped:<why>,
        ("n", pa.int64()),  # seconds:<step> (n = microseconds)
    ]
)

# ROOT/latents/: one row per projected face and (generator, projection settings).
LATENTS = pa.schema(
    [
        ("face_id", pa.string()),
        ("photo_id", pa.int64()),
        ("user_id", pa.string()),
        ("gender", pa.string()),
        ("age_group", pa.string()),
        ("age_bin", pa.string()),
        ("skin_tone", pa.string()),
        ("generator", pa.string()),  # the spec it was loaded from
        ("generator_hash", pa.string()),  # content hash of its kind, arguments and tensors
        ("space", pa.string()),  # w, wplus or z
        ("latent", pa.list_(pa.float32())),  # flattened, row-major
        ("latent_shape", pa.list_(pa.int32())),  # [layers, dim]
        ("loss_kind", pa.string()),  # vgg, disc or pixel
        ("loss", pa.float32()),
        ("steps", pa.int32()),  # steps run before the face stopped improving, or all
        ("psnr", pa.float32()),  # dB, reconstruction against the aligned face
        ("ssim", pa.float32()),
        ("settings_hash", pa.string()),
        ("device", pa.string()),
        ("run_id", pa.string()),
        ("projected_at", TS_UTC),
        ("country", pa.string()),
        ("continent", pa.string()),
    ]
)
LATENTS_PARTITIONS = PHOTOS_PARTITIONS

_SPARK_TYPES = {
    pa.int8(): "TINYINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
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
