"""Where a job's files live, for every machine of the service: a local folder or an S3-compatible bucket.

Workers write a job's PNGs (and the API a classify job's decoded uploads) under
``<job_id>/<name>``; the API serves them and enforces their retention. With
``RESULTS_STORE=local`` (``make run``'s default) that is a folder, ``RESULTS_DIR``,
which the API and the workers must share; with ``RESULTS_STORE=s3`` it is a bucket
on any S3-compatible server (AWS S3, MinIO, Ceph, ...), so the API and the workers
may run on different hosts that share only Redis and the store.

Both stores write whole objects only: a local file is written to a temporary name
and renamed, an S3 object appears complete or not at all, so a reader never sees a
half-written PNG. boto3 is imported only when an S3 store is made.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import INPUTS_DIR, JOB_ID_RE

if TYPE_CHECKING:
    from .settings import ServiceSettings

log = logging.getLogger(__name__)

# A file's name inside its job: one or two plain parts (``grid.png``, ``inputs/digits.npy``).
_NAME_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
CHUNK_BYTES = 64 * 1024


class ResultNotFound(LookupError):
    """The job has no file of that name (never written, or removed by retention)."""


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    modified: float  # unix time of the job's last write
    bytes: int
    results: bool = True  # it has files besides its inputs: it ran (a queued classify job has its inputs alone)


def check_names(job_id: str, name: str | None = None) -> None:
    """Refuse a job id or file name that is not the service's own (they become paths and keys)."""
    if not JOB_ID_RE.match(job_id):
        # Job ids become folder names and key prefixes: only the API's own hex ids are allowed.
        raise ValueError(f"job id {job_id!r} is not 32 lowercase hex digits")
    if name is not None and (not _NAME_RE.match(name) or ".." in name):
        raise ValueError(f"file name {name!r} is not a plain file name")


class ResultStore(ABC):
    """A job's files by (job id, name). Blocking calls: the API runs them in a thread."""

    kind: str

    @abstractmethod
    def put(self, job_id: str, name: str, data: bytes, content_type: str = "image/png") -> None: ...

    @abstractmethod
    def chunks(self, job_id: str, name: str) -> Iterator[bytes]:
        """The file's bytes in pieces; raises ``ResultNotFound`` before the first piece when it is not there."""

    def get(self, job_id: str, name: str) -> bytes:
        return b"".join(self.chunks(job_id, name))

    @abstractmethod
    def exists(self, job_id: str, name: str) -> bool: ...

    @abstractmethod
    def jobs(self) -> list[StoredJob]:
        """Every job that has files, oldest write first."""

    @abstractmethod
    def delete_job(self, job_id: str) -> bool:
        """Remove all of a job's files; whether none is left afterwards."""

    def presigned_url(self, job_id: str, name: str, expires_s: int) -> str | None:
        """A URL a client can GET the file from directly, or None when the store has none."""
        return None

    def describe(self) -> str:
        return self.kind

    @abstractmethod
    def check(self) -> None:
        """Raise with what to fix when the store cannot be used (a missing bucket, wrong credentials)."""


class LocalStore(ResultStore):
    """``<root>/<job_id>/<name>`` on a file system every process of the service mounts."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._sizes = FolderSizes()

    def path(self, job_id: str, name: str) -> Path:
        check_names(job_id, name)
        return self.root / job_id / name

    def put(self, job_id: str, name: str, data: bytes, content_type: str = "image/png") -> None:
        target = self.path(job_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Per process and thread: a threads-pool worker runs many jobs in one process.
        tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(target)

    def chunks(self, job_id: str, name: str) -> Iterator[bytes]:
        try:
            handle = self.path(job_id, name).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ResultNotFound(f"{job_id}/{name}") from None
        return _read(handle)

    def exists(self, job_id: str, name: str) -> bool:
        return self.path(job_id, name).is_file()

    def jobs(self) -> list[StoredJob]:
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if not (JOB_ID_RE.match(folder.name) and folder.is_dir()):
                continue  # other files and folders are never touched
            try:
                size, results = self._sizes(folder)
                found.append(StoredJob(folder.name, folder.stat().st_mtime, size, results))
            except OSError as err:  # removed meanwhile, by another API process
                log.debug("could not measure %s: %s", folder, err)
        self._sizes.forget_missing({job.job_id for job in found})
        return sorted(found, key=lambda job: job.modified)

    def delete_job(self, job_id: str) -> bool:
        check_names(job_id)
        folder = self.root / job_id
        try:
            shutil.rmtree(folder)
        except OSError as err:  # another process may be removing it at the same time
            log.debug("could not remove %s: %s", folder, err)
        return not folder.exists()

    def describe(self) -> str:
        # Published by /readyz: the setting's name, not this machine's path.
        return "local folder RESULTS_DIR"

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


def _read(handle: Any) -> Iterator[bytes]:
    with handle:
        while piece := handle.read(CHUNK_BYTES):
            yield piece


class FolderSizes:
    """Bytes per job folder, and whether it holds results (files besides ``inputs/``), measured again only
    when the folder has changed since the last look."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, int], tuple[int, bool]]] = {}

    def __call__(self, folder: Path) -> tuple[int, bool]:
        signature = _signature(folder)
        known = self._known.get(folder.name)
        if known is None or known[0] != signature:
            results = any(entry.name != INPUTS_DIR for entry in os.scandir(folder))
            known = self._known[folder.name] = (signature, (_measure(folder), results))
        return known[1]

    def forget_missing(self, names: set[str]) -> None:
        for name in set(self._known) - names:
            del self._known[name]


def _signature(folder: Path) -> tuple[int, int]:
    # A job's files are written to a temporary name and renamed into its folder or
    # its inputs/ folder, so each write changes one of these two times.
    try:
        inputs_ns = (folder / INPUTS_DIR).stat().st_mtime_ns
    except FileNotFoundError:
        inputs_ns = 0
    return folder.stat().st_mtime_ns, inputs_ns


def _measure(folder: Path) -> int:
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                total += _measure(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
    return total


class S3Store(ResultStore):
    """``<prefix><job_id>/<name>`` objects in one bucket of an S3-compatible server."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix, self.endpoint_url = bucket, prefix, endpoint_url
        config = Config(
            signature_version="s3v4",
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            # Path-style addressing works with every S3-compatible server (MinIO, Ceph) and with AWS.
            s3={"addressing_style": "path"},
        )
        # Credentials unset: boto3's own chain (environment, instance role, ~/.aws).
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        from botocore.exceptions import ClientError

        self._client_error = ClientError

    def key(self, job_id: str, name: str) -> str:
        check_names(job_id, name)
        return f"{self.prefix}{job_id}/{name}"

    def _missing(self, err: Exception) -> bool:
        code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    def put(self, job_id: str, name: str, data: bytes, content_type: str = "image/png") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, name), Body=data, ContentType=content_type)

    def chunks(self, job_id: str, name: str) -> Iterator[bytes]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except self._client_error as err:
            if self._missing(err):
                raise ResultNotFound(f"{job_id}/{name}") from None
            raise
        return _stream(response["Body"])

    def exists(self, job_id: str, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except self._client_error as err:
            if self._missing(err):
                return False
            raise
        return True

    def _objects(self) -> Iterable[dict[str, Any]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            yield from page.get("Contents", ())

    def jobs(self) -> list[StoredJob]:
        totals: dict[str, tuple[float, int, bool]] = {}
        for item in self._objects():
            job_id, _, name = item["Key"][len(self.prefix) :].partition("/")
            if not JOB_ID_RE.match(job_id):
                continue  # not ours: other objects in the bucket are never touched
            modified, size, results = totals.get(job_id, (0.0, 0, False))
            totals[job_id] = (
                max(modified, item["LastModified"].timestamp()),
                size + int(item["Size"]),
                results or not name.startswith(f"{INPUTS_DIR}/"),
            )
        return sorted((StoredJob(j, m, b, r) for j, (m, b, r) in totals.items()), key=lambda job: job.modified)

    def delete_job(self, job_id: str) -> bool:
        check_names(job_id)
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}{job_id}/")
        keys = [{"Key": item["Key"]} for item in listed.get("Contents", ())]
        # A job has a few hundred files at most, under DeleteObjects' 1,000 per call.
        if keys:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        return True

    def presigned_url(self, job_id: str, name: str, expires_s: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(job_id, name)}, ExpiresIn=expires_s
        )

    def describe(self) -> str:
        return f"s3 bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as err:  # noqa: BLE001 - botocore raises many kinds; each says what went wrong
            raise RuntimeError(
                f"the results store ({self.describe()}) cannot be used: {err}. Create the bucket, or fix "
                "S3_ENDPOINT_URL, S3_BUCKET and the S3 credentials"
            ) from err


def _stream(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def make_store(settings: ServiceSettings) -> ResultStore:
    """The store ``RESULTS_STORE`` names, configured from the shared settings."""
    if settings.results_store == "local":
        return LocalStore(settings.results_dir)
    secret = settings.s3_secret_access_key
    return S3Store(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        prefix=settings.s3_prefix,
    )
