"""A database that cannot be reached is worth retrying (503, Retry-After); a statement
the database rejects for another reason is a defect: 500, logged, no details out."""

from __future__ import annotations

from sqlalchemy import text

from tests.integration.gateway.conftest import Harness


async def test_a_broken_schema_is_a_server_error_not_an_outage(embedded: Harness) -> None:
    # Someone dropped a table behind Cockpit's back: retrying will not bring it back.
    async with embedded.cockpit.db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_logs"))
    r = await embedded.client.get("/audits", headers=embedded.headers())
    assert r.status_code == 500
    assert r.json() == {"status_code": 500, "detail": "internal server error"}
    assert "retry-after" not in r.headers
    # The rest of the server still answers.
    assert (await embedded.client.get("/verdicts", headers=embedded.headers())).status_code == 200
