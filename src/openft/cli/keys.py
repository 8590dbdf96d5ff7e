"""`openft keys`: API keys and the organizations they act for."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from openft.store.accounts import create_key, list_keys, revoke_key
from openft.store.db import session_scope, upgrade_database

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command("create")
def create(
    org: str = typer.Option("default", "--org", help="Organization the key acts for (created if new)."),
    name: str = typer.Option(None, help="A label to recognise the key by."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an API key and print it (only its hash is stored: copy it now)."""
    upgrade_database()
    with session_scope() as session:
        new_key = create_key(session, org, name=name)
    if as_json:
        typer.echo(
            json.dumps({"key": new_key.key, "organization": new_key.organization, "id": new_key.key_id})
        )
    else:
        typer.echo(new_key.key)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List keys (prefixes only)."""
    upgrade_database()
    with session_scope() as session:
        rows = [
            {
                "id": k.id,
                "prefix": k.prefix,
                "organization": o.name,
                "name": k.name,
                "created_at": k.created_at,
                "revoked": k.revoked_at is not None,
            }
            for k, o in list_keys(session)
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "prefix", "organization", "name", "revoked")
    for row in rows:
        table.add_row(
            row["id"], row["prefix"] + "...", row["organization"], row["name"] or "", str(row["revoked"])
        )
    Console().print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="Key id from `openft keys list`.")) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    upgrade_database()
    with session_scope() as session:
        if not revoke_key(session, key_id):
            typer.echo(f"No active key with id {key_id}", err=True)
            raise typer.Exit(1)
    typer.echo(f"Revoked {key_id}")
