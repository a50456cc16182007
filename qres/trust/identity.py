"""Node identities: Ed25519 keys (``cryptography``), DIDs, and key files on disk.

A node's DID is ``did:qres:`` followed by the 64 lowercase hex digits of its raw 32-byte
Ed25519 public key, so a verifier gets the key back from the DID alone.

Key files are PEM (PKCS#8, unencrypted) written atomically with mode 0600; a key file that is
readable or writable by group or others is refused, as OpenSSH does. Nothing here ever puts
secret bytes into a message, a repr or a log line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from qres.kernel.errors import IntegrityError, QresError

DID_PREFIX = "did:qres:"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: Key files larger than this are refused unread (a PEM Ed25519 key is 119 bytes).
MAX_KEY_FILE_BYTES = 4096
#: File name of the default key inside the qres home folder.
DEFAULT_KEY_NAME = "node.key"


def home() -> Path:
    """The folder holding the default key: ``$QRES_HOME``, else ``$XDG_CONFIG_HOME/qres``,
    else ``~/.config/qres``."""
    if os.environ.get("QRES_HOME"):
        return Path(os.environ["QRES_HOME"])
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / "qres"
    return Path.home() / ".config" / "qres"


def default_key_path() -> Path:
    """Where ``qres keys`` reads and writes the node's key unless told otherwise."""
    return home() / DEFAULT_KEY_NAME


def did_of(public_key: bytes) -> str:
    """The DID of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise IntegrityError(f"public key of {len(public_key)} bytes: Ed25519 keys have 32")
    return DID_PREFIX + public_key.hex()


def public_key_of(did: str) -> bytes:
    """The raw public key inside a ``did:qres:`` DID, or IntegrityError."""
    body = did[len(DID_PREFIX) :] if isinstance(did, str) and did.startswith(DID_PREFIX) else None
    if body is None or len(body) != 2 * PUBLIC_KEY_BYTES or body != body.lower():
        raise IntegrityError(f"{did!r}: not a DID; expected {DID_PREFIX}<64 lowercase hex digits>")
    try:
        return bytes.fromhex(body)
    except ValueError as exc:
        raise IntegrityError(f"{did!r}: not a DID; the key part is not hex") from exc


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """A node's signing key. Its repr and str show only the DID."""

    __slots__ = ("_key", "public_key", "did")

    def __init__(self, private_key):
        self._key = private_key
        from cryptography.hazmat.primitives import serialization

        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.did: str = did_of(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity (from the operating system's generator)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity whose 32-byte private seed is ``seed`` (simulations, tests)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if len(seed) != 32:
            raise QresError(f"seed of {len(seed)} bytes: an Ed25519 seed has 32")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def private_pem(self) -> bytes:
        """The private key as PKCS#8 PEM (what key files hold)."""
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM."""
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        return f"Identity({self.did})"

    __str__ = __repr__

    def __reduce__(self):
        # Pickling would copy the secret into whatever stores the pickle; refuse it.
        raise TypeError("an Identity holds a secret key and cannot be pickled")


def parse_private_key(data: bytes, where: str) -> Identity:
    """An identity from key-file bytes (PKCS#8 PEM holding an Ed25519 key), or IntegrityError.

    The message never quotes the file's contents.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if len(data) > MAX_KEY_FILE_BYTES:
        raise IntegrityError(f"{where}: {len(data)} bytes, too large for an Ed25519 key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise IntegrityError(
            f"{where}: not an unencrypted PEM private key; create one with `qres keys new`"
        ) from exc
    except Exception as exc:  # the backend raises its own types on some garbage
        raise IntegrityError(
            f"{where}: unreadable key file; create one with `qres keys new`"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IntegrityError(f"{where}: not an Ed25519 key; create one with `qres keys new`")
    return Identity(key)


def check_permissions(path: Path, mode: int | None = None) -> None:
    """Refuse a key file that group or others may read or write (QresError)."""
    mode = path.stat().st_mode if mode is None else mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise QresError(
            f"{path}: key file is accessible by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )


def load_identity(path: Path | str) -> Identity:
    """Read a key file: refused when missing, too open, too large or not an Ed25519 key."""
    path = Path(path)
    if not path.exists():
        raise QresError(f"{path}: no key file; create one with `qres keys new`")
    # O_NONBLOCK: a FIFO planted at the path must not hang the open.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        # Check the file that was opened, not the path again: no swap in between.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise QresError(f"{path}: not a regular file; give the path of a key file")
        check_permissions(path, info.st_mode)
        data = handle.read(MAX_KEY_FILE_BYTES + 1)
    return parse_private_key(data, str(path))


def save_identity(identity: Identity, path: Path | str, force: bool = False) -> Path:
    """Write the key file atomically with mode 0600 (the folder is created 0700 if missing)."""
    from qres.kernel.outputs import atomic_output

    path = Path(path)
    if path.exists() and not force:
        raise QresError(f"{path}: already exists; pass --force to replace the key (irreversible)")
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # private: the temporary file is 0600 from its creation, so the secret is never readable
    # by others; durable: synced before and after it is published.
    with atomic_output(str(path), force, private=True, durable=True) as out:
        out.write(identity.private_pem())
    return path
