"""``qres keys``: create a node identity, show its DID, export its public key.

The key lives at ``$QRES_HOME/node.key`` (else ``$XDG_CONFIG_HOME/qres/node.key``, else
``~/.config/qres/node.key``) unless ``--key``/``-o`` names another file. No command ever prints
the private key.
"""

from __future__ import annotations

import typer

from qres.cli.output import print_json

app = typer.Typer(help="Node identities: Ed25519 keys and their DIDs.", no_args_is_help=True)

KEY = typer.Option(
    None, "--key", "-k", help="Key file (default: $QRES_HOME/node.key or ~/.config/qres/node.key)."
)


def _key_path(key: str | None):
    from pathlib import Path

    from qres.trust.identity import default_key_path

    return Path(key) if key else default_key_path()


def _describe(identity, path) -> dict:
    return {"did": identity.did, "public_key": identity.public_key.hex(), "key_file": str(path)}


@app.command("new")
def new(
    output: str = typer.Option(
        None, "-o", "--output", help="Where to write the key (default: the default key path)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing key (irreversible)."),
    as_json: bool = typer.Option(False, "--json", help="Print the DID as JSON for scripts."),
) -> None:
    """Create a new Ed25519 identity; the key file is written atomically with mode 0600."""
    from qres.trust.identity import Identity, save_identity

    path = _key_path(output)
    identity = Identity.generate()
    save_identity(identity, path, force=force)
    if as_json:
        print_json(_describe(identity, path))
    else:
        print(f"{identity.did}\nkey written to {path} (mode 600); keep it private")


@app.command("show")
def show(
    key: str = KEY,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Print the identity's DID and public key (never the private key)."""
    from qres.trust.identity import load_identity

    path = _key_path(key)
    identity = load_identity(path)
    info = _describe(identity, path)
    if as_json:
        print_json(info)
    else:
        print(f"did:        {info['did']}\npublic key: {info['public_key']}\nkey file:   {path}")


@app.command("export-public")
def export_public(
    key: str = KEY,
    output: str = typer.Option("-", "-o", "--output", help="Write here instead of stdout."),
    fmt: str = typer.Option("pem", "--format", help="pem (SubjectPublicKeyInfo), hex or did."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Export the public key (PEM by default) for peers to add to their known senders."""
    from qres.kernel.errors import UsageError
    from qres.kernel.outputs import atomic_output
    from qres.trust.identity import load_identity

    if fmt not in ("pem", "hex", "did"):
        raise UsageError(f"--format {fmt!r}: use pem, hex or did")
    identity = load_identity(_key_path(key))
    if fmt == "pem":
        data = identity.public_pem()
    elif fmt == "hex":
        data = identity.public_key.hex().encode() + b"\n"
    else:
        data = identity.did.encode() + b"\n"
    with atomic_output(output, force, binary=False) as out:
        out.write(data)
