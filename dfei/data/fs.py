"""Local paths and fsspec URIs behind one pyarrow FileSystem."""
from __future__ import annotations

import os

import pyarrow.fs as pafs


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
