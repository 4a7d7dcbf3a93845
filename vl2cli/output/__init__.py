"""Output side of a run: the record format, the append-only JSONL writer, resume and locking."""
from .lock import OutputLock, lock_path_for
from .record import SCHEMA_VERSION, FileStamp, Record, Request, build_record, key_of_record, resume_key
from .resume import ResumeIndex
from .schema import load_schema
from .writer import JsonlWriter, read_records

__all__ = [
    "SCHEMA_VERSION", "FileStamp", "JsonlWriter", "OutputLock", "Record", "Request", "ResumeIndex", "build_record",
    "key_of_record", "load_schema", "lock_path_for", "read_records", "resume_key",
]
