"""Quiet third-party logging: our own progress displays say what is happening."""

from __future__ import annotations

import logging
import os
import sys


def quiet_libraries() -> None:
    """Hide the libraries' download/shard bars, accelerate's note on tied embeddings ("Removed shared tensor") and
    datatrove's per-file INFO lines. Called by the CLI and by every worker process it spawns."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    from loguru import logger  # datatrove's logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
