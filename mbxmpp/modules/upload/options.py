"""[upload]: the HTTP file upload component's options (read by mbxmpp/options.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from ...options import BOOL, DOMAIN_TEMPLATE, DURATION, INT, SIZE, STR, ErrorFn, option, writable_dir_problem
from ...util.units import format_size


@dataclass(frozen=True, slots=True)
class UploadConfig:
    """HTTP file upload component (XEP-0363)"""
    enabled: bool = option(True, BOOL, "false: no file upload")
    domain: str = option("upload.{domain}", DOMAIN_TEMPLATE, "{domain} expands per virtual host")
    max_file_size: int = option(10 * 1024 * 1024, SIZE, "larger uploads are refused")
    expire_after: float = option(3600.0, DURATION, "uploaded files are deleted after this long", minimum=1)
    storage_dir: str | None = option(None, STR, "where files are kept (encrypted)",
                                     example="/var/lib/mbxmpp/upload", default_doc="<data_dir>/upload")
    quota_per_user: int = option(100 * 1024 * 1024, SIZE, "bytes a user may have stored (or reserved) at once")
    slots_per_hour: int = option(100, INT, "upload slots a user may request per hour", minimum=1)

    def validate(self, error: ErrorFn) -> Self:
        if self.quota_per_user < self.max_file_size:
            error("quota_per_user", f"must be at least max_file_size ({format_size(self.max_file_size)}), "
                                    f"or files of that size could never be uploaded")
        return self

    def check_files(self, error: ErrorFn) -> None:
        problem = writable_dir_problem(self.storage_dir) if self.storage_dir is not None else None
        if problem is not None:
            error("storage_dir", problem)
