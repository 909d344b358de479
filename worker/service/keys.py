"""Encryption keys: make a new one, re-encrypt everything under the first configured one."""

from __future__ import annotations

from worker.engine.runtime import Runtime
from worker.service.progress import OnProgress, quiet
from worker.store.crypto import generate_key
from worker.store.rotation import RotationReport, rotate


def generate() -> str:
    """A new key, printable and ready for TOKENWORKER_ENCRYPTION_KEYS."""
    return generate_key()


async def rotate_all(rt: Runtime, on_progress: OnProgress = quiet) -> RotationReport:
    """Re-encrypt every stored secret under the first key; resumes where a killed run ended.
    Progress counts connection records walked (their total is not known in advance)."""
    on_progress("re-encrypting", 0, None)
    return await rotate(rt.store, progress=lambda seen: on_progress("re-encrypting", seen, None))
