"""The scores as an Apache Iceberg table, partitioned by run date, in a pyiceberg SQL catalog.

The catalog is a SQL database: by default a SQLite file beside a local warehouse (`<warehouse>/catalog.db`, no
server), in production PostgreSQL (`VAE_CATALOG_URI=postgresql+psycopg://...`, a database of its own on the server
MLflow uses). The warehouse (data and metadata files) is a local path, a shared mount or an `s3://` URI; an object
store's endpoint and credentials come from the standard AWS environment variables, as for every other location.

Each scoring run replaces its run date in one catalog commit (`ScoresSink` in `pipelines.runtime.scored_output`),
with the snapshot properties below, so readers see the previous snapshot or the new one, never a mix, and a
previous run's rows stay readable by snapshot id until `expire` removes the snapshot.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from . import filesystems

CATALOG_ENV = "VAE_CATALOG_URI"
RUN_DATE = "run_date"
# A data file no snapshot references is deleted only when older than this: a scoring run commits its files at its
# end, so until then they are unreferenced too (Iceberg's remove_orphan_files keeps 3 days for the same reason).
ORPHAN_GRACE = datetime.timedelta(days=1)
SNAPSHOT_RUN_DATE = "vae.run_date"  # snapshot properties of a scoring run's commit
SNAPSHOT_MODEL = "vae.model"
SNAPSHOT_JOB = "vae.job"
SNAPSHOT_ROWS = "vae.rows"


class CatalogError(RuntimeError):
    """The scores table cannot be reached or read; the message names the catalog or table and the cause."""


@dataclass(frozen=True)
class ScoresTable:
    """Where a job's scores live: `identifier` ("namespace.table") in the catalog at `catalog_uri` (SQLAlchemy
    URI), its files under `warehouse`."""

    identifier: str
    warehouse: str
    catalog_uri: str

    @classmethod
    def at(cls, warehouse: str, identifier: str, catalog_uri: str = "") -> ScoresTable:
        """The table for a job's settings: `catalog_uri` as given, else `VAE_CATALOG_URI`, else a SQLite file in a
        local `warehouse`; raises CatalogError for an object-store warehouse without a catalog database."""
        uri = catalog_uri or os.environ.get(CATALOG_ENV, "")
        remote = filesystems.is_remote(warehouse)
        if not remote:
            warehouse = str(Path(warehouse.removeprefix("file://")).absolute())
        if not uri:
            if remote:
                raise CatalogError(f"{warehouse}: an object-store warehouse needs a catalog database; set catalog= "
                                   f"or {CATALOG_ENV} (e.g. postgresql+psycopg://user@host/iceberg)")  # fmt: skip
            uri = f"sqlite:///{warehouse}/catalog.db"
        if "." not in identifier:
            raise CatalogError(f"table {identifier!r}: name it namespace.table (e.g. vae.scores)")
        return cls(identifier, warehouse, uri)

    @property
    def namespace(self) -> str:
        return self.identifier.rsplit(".", 1)[0]

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg `load_catalog` arguments (no secret: the URI's password, if any, is the operator's)."""
        warehouse = self.warehouse if filesystems.is_remote(self.warehouse) else f"file://{self.warehouse}"
        properties = {"type": "sql", "uri": self.catalog_uri, "warehouse": warehouse}
        if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
            properties["s3.endpoint"] = endpoint
        if region := os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"):
            properties["s3.region"] = region
        return properties

    def catalog(self):
        """The pyiceberg catalog (its tables created on first use); a local warehouse's folder is made here."""
        from pyiceberg.catalog import load_catalog

        if not filesystems.is_remote(self.warehouse):
            Path(self.warehouse).mkdir(parents=True, exist_ok=True)
        try:
            return load_catalog("scores", **self.catalog_properties())
        except Exception as err:  # SQLAlchemy and driver errors have no common base worth naming
            raise CatalogError(f"catalog {_redacted(self.catalog_uri)}: {_first_line(err)}") from err

    def load(self):
        """The table, or None when no run has created it yet (a local warehouse that does not exist is left
        uncreated: reading a wrong `output=` must not make one)."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        if not filesystems.is_remote(self.warehouse) and not Path(self.warehouse).exists():
            return None
        try:
            return self.catalog().load_table(self.identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def key_problems(self, keys: pa.Schema) -> list[str]:
        """What stops the key columns `keys` (their Arrow types as read) from going into this table: a type an
        Iceberg v2 table cannot hold (nanosecond timestamps, unless pyiceberg is set to downcast them) or one that
        cannot replace the type the table already has for that column (a long key read as text)."""
        from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE
        from pyiceberg.utils.config import Config

        problems = []
        downcast = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE)
        for field in keys:
            if pa.types.is_timestamp(field.type) and field.type.unit == "ns" and not downcast:
                problems.append(f"key column {field.name!r} holds nanosecond timestamps, which an Iceberg table "
                                "cannot hold: write it in microseconds (or set "
                                "PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE=true)")  # fmt: skip
        table = self.load()
        current = pa.schema([]) if table is None else table.schema().as_arrow()
        for field in keys:
            if field.name not in current.names:
                continue
            have = current.field(field.name)
            try:  # a widening (int to long) evolves the table; other types cannot share the column
                pa.unify_schemas([pa.schema([have]), pa.schema([field])], promote_options="permissive")
            except (pa.ArrowException, TypeError, ValueError):
                problems.append(f"key column {field.name!r} is {field.type} here but {have.type} in the table "
                                f"{self.identifier}, whose rows keep that type: write it as {have.type}")  # fmt: skip
        return problems

    def create(self, schema: pa.Schema):
        """The table, created with `schema` and partitioned by run date when missing (another job may create it
        at the same moment: then that one's table is returned)."""
        from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError

        catalog = self.catalog()
        catalog.create_namespace_if_not_exists(self.namespace)
        # No automatic re-application of a lost commit: `ScoresSink.commit` decides (same date: fail).
        no_retries = {"commit.retry.num-retries": "0"}
        creation = catalog.create_table_transaction(self.identifier, schema, properties=no_retries)
        with creation.update_spec() as spec:
            spec.add_identity(RUN_DATE)
        with contextlib.suppress(CommitFailedException, TableAlreadyExistsError):  # another job created it
            creation.commit_transaction()
        return catalog.load_table(self.identifier)

    def date_snapshot(self, table, run_date: str):
        """The latest snapshot a scoring run committed for `run_date`, or None."""
        for snapshot in sorted(table.snapshots(), key=lambda s: s.timestamp_ms, reverse=True):
            if snapshot_properties(snapshot).get(SNAPSHOT_RUN_DATE) == run_date:
                return snapshot
        return None

    def read(self, run_date: str, snapshot_id: int | None = None, columns: tuple[str, ...] = ("*",)) -> pa.Table:
        """The rows of `run_date` in the current snapshot (or in `snapshot_id`), all in memory; raises CatalogError
        when the table or the snapshot does not exist."""
        return self.batches(run_date, snapshot_id, columns)[1].read_all()

    def batches(
        self, run_date: str, snapshot_id: int | None = None, columns: tuple[str, ...] = ("*",)
    ) -> tuple[Any, pa.RecordBatchReader]:
        """(the loaded Iceberg table, a reader of the rows of `run_date` in the current snapshot or `snapshot_id`,
        one record batch at a time); raises CatalogError when the table or the snapshot does not exist."""
        from pyiceberg.expressions import EqualTo

        table = self.load()
        if table is None:
            raise CatalogError(f"{self.identifier}: no such table in {_redacted(self.catalog_uri)}; run a score job")
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            raise CatalogError(f"{self.identifier}: no snapshot {snapshot_id} (expired, or of another table)")
        scan = table.scan(row_filter=EqualTo(RUN_DATE, run_date), selected_fields=columns, snapshot_id=snapshot_id)
        return table, scan.to_arrow_batch_reader()

    def expire(self, older_than: datetime.datetime) -> tuple[int, int]:
        """Expire the snapshots committed before `older_than` (never the current one) and delete the data files only
        they referenced; then delete the data files no snapshot ever referenced (a failed or killed run's) that were
        written before `older_than` and at least ORPHAN_GRACE ago: a run still writing has not committed its files
        yet, and must not lose them whatever the cutoff. Returns (snapshots expired, files deleted)."""
        table = self.load()
        if table is None:
            return 0, 0
        current, cutoff_ms = table.metadata.current_snapshot_id, older_than.timestamp() * 1000
        referenced = _data_files(table)
        old = [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id != current]
        if old:
            table.maintenance.expire_snapshots().by_ids(old).commit()
        released = referenced - _data_files(table)
        fs, data = filesystems.filesystem(filesystems.join(table.location(), "data"))
        found = fs.get_file_info(pafs.FileSelector(data.removeprefix("file://"), recursive=True, allow_not_found=True))
        grace_ms = (datetime.datetime.now(datetime.UTC) - ORPHAN_GRACE).timestamp() * 1000
        orphans = [f.path for f in found if f.is_file and f.path not in referenced and f.path.endswith(".parquet")
                   and f.mtime is not None and f.mtime.timestamp() * 1000 < min(cutoff_ms, grace_ms)]  # fmt: skip
        for path in [*released, *orphans]:
            fs.delete_file(path)
        return len(old), len(released) + len(orphans)


def _data_files(table) -> set[str]:
    """The paths of the data files any snapshot of `table` references, as its filesystem names them (no scheme)."""
    return {task.file.file_path.split("://", 1)[-1] for snapshot in table.snapshots()
            for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files()}  # fmt: skip


class ConcurrentRunError(RuntimeError):
    """Another attempt committed the same run date while this one ran; this attempt published nothing."""


def snapshot_properties(snapshot) -> dict[str, Any]:
    """A snapshot's summary as a plain dict (operation included)."""
    summary = snapshot.summary
    return {} if summary is None else {"operation": str(summary.operation.value), **summary.additional_properties}


def _redacted(uri: str) -> str:
    """A database URI without its password."""
    head, at, tail = uri.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return uri
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
