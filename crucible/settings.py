"""Settings, all from the environment (see .env.example).

Two shapes of the same settings:
- embedded (the default, for `make run`): SQLite and files under CRUCIBLE_DATA_DIR, a Celery broker
  on the local file system that needs no server;
- server (DATABASE_URL and CELERY_BROKER_URL set): PostgreSQL, Redis or RabbitMQ, optionally S3.
Outside the embedded mode SECRET_KEY is required.
"""

import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

DATA_DIR = Path(env.str("CRUCIBLE_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
CRUCIBLE_MODE = env.str("CRUCIBLE_MODE", default="embedded")  # embedded | server
EMBEDDED = CRUCIBLE_MODE == "embedded"


def _embedded_secret_key() -> str:
    # Kept on disk so that sessions survive a restart of `make run`.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# Outside the embedded mode a missing SECRET_KEY raises ImproperlyConfigured: production refuses to start.
SECRET_KEY = (env.str("SECRET_KEY", default="") or _embedded_secret_key()) if EMBEDDED else env.str("SECRET_KEY")

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if EMBEDDED else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "crucible.core",
    "curation",
    "labeling",
    "training",
    "evaluation",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "crucible.urls"
WSGI_APPLICATION = "crucible.wsgi.application"
AUTH_USER_MODEL = "core.User"
LOGIN_URL = "frontend:login"
LOGIN_REDIRECT_URL = "frontend:home"
LOGOUT_REDIRECT_URL = "frontend:login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_sqlite_path = DATA_DIR / "crucible.sqlite3"
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{_sqlite_path}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: wait for locks, take write locks up front.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that a worker process started by the tests sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_crucible")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# Files: a local folder by default, S3-compatible storage when a bucket is configured.
MEDIA_ROOT = DATA_DIR / "files"
S3_BUCKET = env.str("CRUCIBLE_S3_BUCKET", default="")
if S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env.str("CRUCIBLE_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("CRUCIBLE_S3_REGION", default="") or None,
            "location": env.str("CRUCIBLE_S3_PREFIX", default=""),
            "file_overwrite": True,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Local cache of materialized shards and checkpoints on each worker, keyed by content hash.
CRUCIBLE_CACHE_DIR = Path(env.str("CRUCIBLE_CACHE_DIR", default=str(DATA_DIR / "cache")))
# Dataset versions whose preprocessed image (channels*width*height bytes) is at most this keep raw
# uint8 npy shards; larger ones store each image as a lossless PNG (curation.shards). Part of the
# content hash of encoded versions: web and workers must agree on it.
CRUCIBLE_SHARD_RAW_MAX_BYTES = env.int("CRUCIBLE_SHARD_RAW_MAX_BYTES", default=64 * 64 * 3)

# Imports from server folders are allowed only under these roots.
CRUCIBLE_IMPORT_ROOTS = [
    Path(p).resolve() for p in env.list("CRUCIBLE_IMPORT_ROOTS", default=[str(DATA_DIR / "imports")])
]
CRUCIBLE_MAX_IMAGE_PIXELS = env.int("CRUCIBLE_MAX_IMAGE_PIXELS", default=40_000_000)
# URL-list imports refuse private, loopback and link-local addresses unless this is on.
CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS = env.bool("CRUCIBLE_IMPORT_ALLOW_PRIVATE_URLS", default=False)
# S3-prefix imports: the endpoint of an S3-compatible store (empty: AWS, or CRUCIBLE_S3_ENDPOINT_URL).
CRUCIBLE_IMPORT_S3_ENDPOINT_URL = env.str("CRUCIBLE_IMPORT_S3_ENDPOINT_URL", default="")
# Cleaning: the Hamming radius (bits of the 64-bit perceptual hash, 0-7) within which two images are
# near duplicates, and the radius the leak guard uses when a version is frozen (default: the same).
CRUCIBLE_NEAR_DUPLICATE_RADIUS = env.int("CRUCIBLE_NEAR_DUPLICATE_RADIUS", default=4)
CRUCIBLE_LEAK_RADIUS = env.int("CRUCIBLE_LEAK_RADIUS", default=CRUCIBLE_NEAR_DUPLICATE_RADIUS)
# Assets up to this size are appended to content-addressed pack files instead of one file each.
CRUCIBLE_PACK_MAX_ASSET_BYTES = env.int("CRUCIBLE_PACK_MAX_ASSET_BYTES", default=256 * 1024)
CRUCIBLE_MAX_UPLOAD_BYTES = env.int("CRUCIBLE_MAX_UPLOAD_BYTES", default=2 * 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "crucible.core.errors.exception_handler",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Crucible API",
    "DESCRIPTION": "Data labelling and model lifecycle: imports, datasets, training runs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: queues ingest, train, eval, default.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://" if EMBEDDED else "redis://127.0.0.1:6379/0")
_broker_dir = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.5,
    }
else:
    # Longer than the longest job, so that an unacknowledged training task is not redelivered early.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7 * 24 * 3600}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "curation.*": {"queue": "ingest"},
    "training.*": {"queue": "train"},
    "evaluation.*": {"queue": "eval"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 6 * 3600
CELERY_TASK_SOFT_TIME_LIMIT = 6 * 3600 - 60
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Tasks run eagerly only when a test asks for it explicitly; never as a silent fallback.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# Labelling: how long an annotator holds a claimed item without a heartbeat.
LABELING_LEASE_TTL = env.int("LABELING_LEASE_TTL", default=600)

# PyTorch threads per worker process (see docs/operations.md).
CRUCIBLE_TORCH_THREADS = env.int("CRUCIBLE_TORCH_THREADS", default=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
