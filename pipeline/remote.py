"""Point DVC at a shared artifact store (a "remote") in one command; then `dvc push` / `dvc pull`.

    python -m pipeline.remote                                  # a local folder: ~/advlab-dvc-store
    python -m pipeline.remote /shared/lab/advlab-store         # another folder (a shared file system)
    python -m pipeline.remote s3://bucket/advlab               # S3 (pip install -e ".[s3]")
    python -m pipeline.remote s3://bucket/advlab --endpoint-url http://127.0.0.1:9000   # MinIO, moto, ...

The remote becomes the default one, under the name `store`, in .dvc/config: commit that file, and
every clone pushes to and pulls from the same place. Credentials never go there: S3 reads them
from the usual AWS sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role), or
from `dvc remote modify --local store access_key_id ...` (.dvc/config.local, not committed: each
clone sets them again).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from pipeline.config import ROOT

NAME = "store"
DEFAULT_FOLDER = "~/advlab-dvc-store"


def resolve(url: str | None) -> str:
    """The remote's URL: s3:// as given; a folder made absolute (DVC would read a relative one
    against .dvc/, which surprises everyone)."""
    url = url or DEFAULT_FOLDER
    scheme = urlparse(url).scheme
    if scheme == "s3":
        if not urlparse(url).netloc:
            raise ValueError(f"{url!r}: an S3 remote needs a bucket, e.g. s3://bucket/advlab")
        if importlib.util.find_spec("dvc_s3") is None:
            raise ValueError("S3 remotes need the dvc-s3 package: pip install -e '.[s3]'")
        return url
    if scheme and len(scheme) > 1:  # ssh://, gs://, azure://: DVC supports them with its plugins
        return url
    return str(Path(os.path.expanduser(url)).resolve())


def configure(url: str | None, endpoint_url: str | None = None, root: Path = ROOT) -> str:
    """Make `url` the project's default DVC remote; returns the resolved URL."""
    target = resolve(url)
    if endpoint_url and not target.startswith("s3://"):
        raise ValueError("--endpoint-url applies to s3:// remotes only")
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)

    def dvc(*args: str) -> None:
        out = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
        if out.returncode != 0:
            raise ValueError(f"dvc {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")

    dvc("remote", "add", "--force", "--default", NAME, target)
    if endpoint_url:
        dvc("remote", "modify", NAME, "endpointurl", endpoint_url)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help=f"folder or s3://bucket/path (default: {DEFAULT_FOLDER})")
    parser.add_argument("--endpoint-url", help="S3-compatible server other than AWS (MinIO, moto, Ceph)")
    args = parser.parse_args(argv)
    try:
        target = configure(args.url, args.endpoint_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"DVC remote {NAME!r} -> {target} (the default; in .dvc/config: commit it). Now: dvc push / dvc pull")
    return 0


if __name__ == "__main__":
    sys.exit(main())
