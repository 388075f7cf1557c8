"""The agent's start-up stays lean: libraries only some configs need are imported only when those configs are used
(each costs resident memory in every pod: the cryptography package ~7 MB, the PostgreSQL driver more)."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_agent_imports_neither_cryptography_nor_the_postgres_driver() -> None:
    code = (
        "import sys, agent.runtime, agent.cli; "
        "print(','.join(m for m in ('cryptography', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
