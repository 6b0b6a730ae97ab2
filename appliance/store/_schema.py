"""Table definitions, as an ordered list of migrations. Append; never edit."""

JSON_COLUMNS = frozenset(
    {
        "class_names",
        "processing_error",
        "ingest_summary",
        "metadata",
        "labels",
        "train_args",
        "metrics",
        "error",
        "args",
        "result",
        "environment",
        "training_error",
        "profile",
        "details",
    }
)

_INITIAL = [
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    )""",
    """CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        asset_type TEXT NOT NULL,
        asset_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        total_bytes INTEGER NOT NULL,
        size INTEGER,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE datasets (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users(id),
        slug TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        task TEXT NOT NULL,
        visibility TEXT NOT NULL,
        class_names TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        processing_error TEXT,
        ingest_job_id TEXT,
        ingest_summary TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (owner_id, slug)
    )""",
    """CREATE TABLE images (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        hash TEXT NOT NULL,
        ext TEXT NOT NULL,
        name TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        split TEXT NOT NULL,
        labels TEXT,
        label_count INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX images_dataset_split ON images (dataset_id, split)",
    "CREATE INDEX images_dataset_hash ON images (dataset_id, hash)",
    """CREATE TABLE ingest_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        job_id TEXT NOT NULL,
        path TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX ingest_files_dataset ON ingest_files (dataset_id, job_id)",
    """CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users(id),
        slug TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        visibility TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (owner_id, slug)
    )""",
    """CREATE TABLE models (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        slug TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        task TEXT,
        status TEXT NOT NULL,
        train_args TEXT,
        metrics TEXT,
        class_names TEXT,
        epochs INTEGER,
        best_epoch INTEGER,
        best_fitness REAL,
        weights_size INTEGER,
        dataset_id TEXT,
        training_error TEXT,
        environment TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        started_at TEXT,
        completed_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (project_id, slug)
    )""",
    """CREATE TABLE epochs (
        model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        fitness REAL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (model_id, epoch)
    )""",
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        user_id TEXT,
        status TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        args TEXT,
        result TEXT,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        heartbeat_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX jobs_subject ON jobs (subject_id, kind)",
    "CREATE INDEX jobs_status ON jobs (status)",
    """CREATE TABLE exports (
        id TEXT PRIMARY KEY,
        model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        format TEXT NOT NULL,
        args TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,
        filename TEXT,
        file_size INTEGER,
        error TEXT,
        job_id TEXT,
        started_at TEXT,
        completed_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
]

_ACCOUNTS = [
    "ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'personal'",
    "ALTER TABLE users ADD COLUMN password_hash TEXT",
    "ALTER TABLE users ADD COLUMN email TEXT",
    "ALTER TABLE users ADD COLUMN profile TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE users ADD COLUMN icon TEXT",
    "ALTER TABLE users ADD COLUMN onboarded_at TEXT",
    """CREATE TABLE memberships (
        team_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (team_id, user_id)
    )""",
    "CREATE INDEX memberships_user ON memberships (user_id)",
    "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
    """CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        invitee TEXT NOT NULL,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        invited_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        accepted_at TEXT,
        revoked_at TEXT
    )""",
    """CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE follows (
        follower_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        followee_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (follower_id, followee_id)
    )""",
]

_VERSIONS = [
    """CREATE TABLE dataset_versions (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL,
        task TEXT NOT NULL,
        class_names TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        image_count INTEGER NOT NULL,
        class_count INTEGER NOT NULL,
        annotation_count INTEGER NOT NULL,
        train INTEGER NOT NULL,
        val INTEGER NOT NULL,
        test INTEGER NOT NULL,
        labeled INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        source_updated_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (dataset_id, version)
    )""",
    "CREATE INDEX dataset_versions_hash ON dataset_versions (dataset_id, content_hash)",
    """CREATE TABLE dataset_version_images (
        version_id TEXT NOT NULL REFERENCES dataset_versions(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        image_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        ext TEXT NOT NULL,
        name TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        split TEXT NOT NULL,
        labels TEXT,
        label_count INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        metadata TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (version_id, position)
    )""",
]

_INGEST_FORMATS = [
    "ALTER TABLE images ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'",
]

_DATASET_ANALYSES = [
    """CREATE TABLE dataset_analyses (
        dataset_id TEXT PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE,
        job_id TEXT NOT NULL,
        feature TEXT NOT NULL,
        model_id TEXT,
        dims INTEGER NOT NULL,
        count INTEGER NOT NULL,
        failed INTEGER NOT NULL DEFAULT 0,
        file TEXT NOT NULL,
        analyzed_at TEXT NOT NULL
    )""",
]

_DATASET_OPS = [
    "ALTER TABLE images ADD COLUMN updated_at TEXT",
    "ALTER TABLE datasets ADD COLUMN deleted_at TEXT",
    "ALTER TABLE datasets ADD COLUMN cloned_from TEXT",
    "ALTER TABLE datasets ADD COLUMN details TEXT NOT NULL DEFAULT '{}'",
    "CREATE INDEX images_dataset_created ON images (dataset_id, created_at, id)",
    "CREATE INDEX models_dataset ON models (dataset_id)",
    "CREATE INDEX images_errors ON images (dataset_id) WHERE error IS NOT NULL",
]

#: Image pages sort by these columns within a dataset; each index serves both
#: directions and keeps a page of a 100k-image dataset from sorting all of it.
_IMAGE_SORT_INDEXES = [
    f"CREATE INDEX images_dataset_{column} ON images (dataset_id, {column}, id)"
    for column in ("name", "bytes", "label_count")
]

#: A classified image's label is one class or none: an empty list is "none", so it
#: is stored as NULL whichever way it is written (an edit, a task change), and
#: every count, the hasLabel filter and the NDJSON export agree that it is unlabeled.
_CLASSIFY_EMPTY = (
    "labels = '[]' AND dataset_id IN (SELECT id FROM datasets WHERE task = 'classify')"
)
_INGEST_FIXES = [
    f"UPDATE images SET labels = NULL WHERE {_CLASSIFY_EMPTY}",
    """CREATE TRIGGER images_classify_empty_insert AFTER INSERT ON images
    WHEN NEW.labels = '[]'
        AND (SELECT task FROM datasets WHERE id = NEW.dataset_id) = 'classify'
    BEGIN UPDATE images SET labels = NULL WHERE id = NEW.id; END""",
    """CREATE TRIGGER images_classify_empty_update AFTER UPDATE OF labels ON images
    WHEN NEW.labels = '[]'
        AND (SELECT task FROM datasets WHERE id = NEW.dataset_id) = 'classify'
    BEGIN UPDATE images SET labels = NULL WHERE id = NEW.id; END""",
    """CREATE TRIGGER datasets_classify_empty AFTER UPDATE OF task ON datasets
    WHEN NEW.task = 'classify'
    BEGIN
        UPDATE images SET labels = NULL WHERE dataset_id = NEW.id AND labels = '[]';
    END""",
]

_PROJECTS_MODELS = [
    "ALTER TABLE projects ADD COLUMN deleted_at TEXT",
    "ALTER TABLE projects ADD COLUMN cloned_from TEXT",
    "ALTER TABLE projects ADD COLUMN details TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE models ADD COLUMN deleted_at TEXT",
    "ALTER TABLE models ADD COLUMN cloned_from TEXT",
    "ALTER TABLE models ADD COLUMN details TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE models ADD COLUMN download_count INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX models_project ON models (project_id, created_at)",
]

MIGRATIONS: list[tuple[str, list[str]]] = [
    ("initial", _INITIAL),
    ("accounts, teams, sessions", _ACCOUNTS),
    ("dataset versions", _VERSIONS),
    ("ingest formats: image metadata", _INGEST_FORMATS),
    ("dataset embeddings and layout", _DATASET_ANALYSES),
    ("dataset and image operations, trash", _DATASET_OPS),
    ("image sort indexes", _IMAGE_SORT_INDEXES),
    (
        "image hashes across datasets and versions",
        [
            "CREATE INDEX images_hash ON images (hash)",
            "CREATE INDEX version_images_hash ON dataset_version_images (hash)",
        ],
    ),
    (
        "image tombstones",
        [
            """CREATE TABLE image_tombstones (
                id TEXT PRIMARY KEY,
                dataset_id TEXT NOT NULL,
                name TEXT NOT NULL,
                bytes INTEGER NOT NULL,
                width INTEGER NOT NULL,
                height INTEGER NOT NULL,
                label_count INTEGER NOT NULL,
                created_at TEXT NOT NULL,
                deleted_at TEXT NOT NULL
            )""",
            "CREATE INDEX image_tombstones_deleted ON image_tombstones (deleted_at)",
        ],
    ),
    ("ingest fixes: an empty classify label is no label", _INGEST_FIXES),
    ("projects and models: trash, clones, details, downloads", _PROJECTS_MODELS),
    (
        "training jobs: the device each runs on",
        ["ALTER TABLE jobs ADD COLUMN device TEXT"],
    ),
]

MIGRATIONS.append(
    (
        "webhooks: endpoints, outbox, delivery log",
        [
            """CREATE TABLE webhooks (
                id TEXT PRIMARY KEY,
                owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                url TEXT NOT NULL,
                events TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                secret TEXT NOT NULL,
                active INTEGER NOT NULL DEFAULT 1,
                created_by TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            "CREATE INDEX webhooks_owner ON webhooks (owner_id, created_at)",
            """CREATE TABLE webhook_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
                event_id TEXT NOT NULL,
                event TEXT NOT NULL,
                body TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                due REAL NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX webhook_outbox_due ON webhook_outbox (due)",
            """CREATE TABLE webhook_deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
                event_id TEXT NOT NULL,
                event TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                status_code INTEGER,
                duration_ms INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                failure TEXT,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, id)",
        ],
    )
)
