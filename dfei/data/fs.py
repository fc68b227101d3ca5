"""Local paths and fsspec URIs behind one pyarrow FileSystem."""
from __future__ import annotations

import os

import pyarrow.fs as pafs


def absolute(uri: str) -> str:
    """A URI (s3://..., file://...) as given; a local path made absolute against this process's
    working directory. Every path a pipeline hands to Ray (data, outputs, storage, checkpoints)
    goes through here first: Ray's workers, actors and storage layer do not share the driver's
    working directory, and pyarrow refuses a relative storage path ("URI has empty scheme")."""
    uri = str(uri)
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path, file:// or any fsspec URI (s3://...)."""
    uri = str(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = fsspec.core.url_to_fs(uri)
    return PyFileSystem(FSSpecHandler(fs)), path


def absolute_tracking_uri(uri: str) -> str:
    """An MLflow tracking URI with a relative sqlite path or a bare directory made absolute (as
    `absolute`): the processes that log (Ray Train's controller, a Tune trial, which Ray moves into
    its own log directory) do not run in the driver's working directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + absolute(uri[len("sqlite:///"):])
    if "://" not in uri and not uri.startswith("file:"):
        return "file://" + absolute(uri)
    return uri


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for Ray Train's and Tune's RunConfig: a local path made
    absolute with no filesystem (Ray's own), any fsspec URI (s3://, gs://, ...) through fsspec."""
    if "://" not in str(uri):
        return absolute(uri), None
    filesystem, path = resolve(uri)
    return path, filesystem


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


def list_files(fs: pafs.FileSystem, directory: str, suffix: str = "") -> list[str]:
    """Sorted files directly under `directory` ending with `suffix`; [] if it does not exist."""
    info = fs.get_file_info(directory)
    if info.type != pafs.FileType.Directory:
        return []
    entries = fs.get_file_info(pafs.FileSelector(directory, recursive=False))
    return sorted(e.path for e in entries if e.type == pafs.FileType.File and e.base_name.endswith(suffix))


def list_dirs(fs: pafs.FileSystem, directory: str) -> list[str]:
    info = fs.get_file_info(directory)
    if info.type != pafs.FileType.Directory:
        return []
    entries = fs.get_file_info(pafs.FileSelector(directory, recursive=False))
    return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory)
