"""Compatibility name: the output-folder helpers live in :mod:`l1bn.spec.outdir` (no torch)."""

from l1bn.spec.outdir import (  # noqa: F401
    check_not_input,
    check_output_dir,
    check_output_file,
    check_path_is_creatable,
    publish_dir,
    staged_dir,
    write_text_atomic,
)

__all__ = ["check_output_dir", "check_output_file", "check_not_input", "check_path_is_creatable", "staged_dir",
           "publish_dir", "write_text_atomic"]
