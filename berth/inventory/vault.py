"""Ansible Vault: ``!vault |`` values and whole encrypted files, format 1.1 and 1.2, on ``cryptography``.

The format, as ansible-core 2.19's ``parsing/vault/__init__.py`` writes it (``format_vaulttext_envelope``,
``VaultAES256.encrypt`` / ``_gen_key_initctr`` / ``_encrypt_cryptography``, ``_parse_vaulttext``):

- a header line ``$ANSIBLE_VAULT;1.1;AES256`` or, with a vault id, ``$ANSIBLE_VAULT;1.2;AES256;<id>``;
- then, in lines of 80, ``hexlify(hexlify(salt) + "\\n" + hexlify(hmac) + "\\n" + hexlify(ciphertext))``;
- key material: PBKDF2-HMAC-SHA256 over the password, the 32-byte salt and 10000 iterations, 80 bytes:
  the AES-256 key (0-32), the HMAC key (32-64), the CTR initial counter block (64-80);
- the plaintext is PKCS#7-padded (128-bit blocks), encrypted with AES-256-CTR; the HMAC-SHA256 is over
  the ciphertext.

Passwords come from ``--vault-password-file`` (repeatable, ``id@file`` gives one a vault id) or else
``ANSIBLE_VAULT_PASSWORD_FILE``: a file whose content (stripped) is the password, or an executable whose
standard output is (a ``*-client`` script gets ``--vault-id ID``, as Ansible's client scripts do). As
Ansible (without ``vault_id_match``), a value is tried with the password of its vault id first, then with
every other one.

Every decrypted value is a secret: :func:`revealed` lists them for berth's redaction.
"""

from __future__ import annotations

import functools
import os
import subprocess
from binascii import Error as HexError
from binascii import hexlify, unhexlify
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from berth.errors import InventoryError

HEADER = "$ANSIBLE_VAULT"
DEFAULT_ID = "default"
ITERATIONS = 10000
KEY_LENGTH = 32
IV_LENGTH = 16
SALT_LENGTH = 32
LINE_WIDTH = 80
ENV_PASSWORD_FILE = "ANSIBLE_VAULT_PASSWORD_FILE"

_revealed: set[str] = set()


@dataclass(frozen=True)
class Password:
    vault_id: str
    secret: bytes
    source: str  # the file it came from, for messages


@dataclass(frozen=True)
class VaultText:
    """A ``!vault |`` value as written (still encrypted), with its line."""

    envelope: str
    line: int | None = None


def revealed() -> list[str]:
    """Every value decrypted so far (never to be printed)."""
    return sorted(_revealed)


def reveal(value: str) -> str:
    """Mark a value as a secret (for redaction) and return it."""
    if value:
        _revealed.add(value)
    return value


def is_encrypted(text: str) -> bool:
    return text.lstrip().startswith(HEADER + ";")


def load_passwords(files: Sequence[str] = (), env: Mapping[str, str] | None = None) -> list[Password]:
    """Passwords from ``[id@]file`` arguments, else from ``$ANSIBLE_VAULT_PASSWORD_FILE``; [] if neither."""
    env = os.environ if env is None else env
    items = list(files) or ([env[ENV_PASSWORD_FILE]] if env.get(ENV_PASSWORD_FILE) else [])
    passwords = []
    for item in items:
        vault_id, sep, path = item.partition("@")
        if not sep or not vault_id or os.path.exists(item):
            vault_id, path = DEFAULT_ID, item
        passwords.append(Password(vault_id, _read_password(Path(path), vault_id), path))
    return passwords


def _read_password(path: Path, vault_id: str) -> bytes:
    if not path.is_file():
        raise InventoryError(f"vault password file {path} does not exist")
    if os.access(path, os.X_OK):  # a script prints the password (Ansible's ScriptVaultSecret)
        command = [str(path.resolve())]
        if path.name.endswith("-client") or "-client." in path.name:  # Ansible's script_is_client
            command += ["--vault-id", vault_id]
        try:
            result = subprocess.run(command, capture_output=True, timeout=60, check=False)
        except OSError as exc:
            raise InventoryError(f"vault password script {path}: cannot run it ({exc.strerror})") from None
        if result.returncode != 0:
            raise InventoryError(f"vault password script {path} exited {result.returncode}")
        secret = result.stdout.strip()
    else:
        secret = path.read_bytes().strip()
    if not secret:
        raise InventoryError(f"vault password from {path} is empty")
    return secret


def decrypt(envelope: str, passwords: Sequence[Password], where: str) -> str:
    """The plaintext of a vault envelope; errors name ``where`` (file:line) and never the password."""
    vault_id, salt, tag, ciphertext = _parse(envelope, where)
    if not passwords:
        raise InventoryError(
            f"{where}: vault-encrypted, and no vault password given (--vault-password-file FILE or "
            f"{ENV_PASSWORD_FILE})"
        )
    ordered = sorted(passwords, key=lambda password: password.vault_id != vault_id)
    for password in ordered:
        key, hmac_key, iv = _derive(password.secret, salt)
        check = HMAC(hmac_key, hashes.SHA256())
        check.update(ciphertext)
        try:
            check.verify(tag)
        except InvalidSignature:
            continue
        decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        try:
            plaintext = (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise InventoryError(f"{where}: vault value decrypts to invalid data") from None
        return reveal(plaintext)
    given = ", ".join(f"{password.vault_id} ({password.source})" for password in passwords)
    if vault_id != DEFAULT_ID and all(password.vault_id != vault_id for password in passwords):
        raise InventoryError(
            f"{where}: vault id {vault_id!r} has no password, and none of the others opens it (given: {given}); "
            f"add --vault-password-file {vault_id}@FILE"
        )
    raise InventoryError(f"{where}: wrong vault password: none of {given} decrypts this value")


def encrypt(plaintext: str, password: bytes, vault_id: str = "", salt: bytes | None = None) -> str:
    """A vault envelope (1.1, or 1.2 with ``vault_id``), as ``ansible-vault encrypt_string`` writes it."""
    salt = salt or os.urandom(SALT_LENGTH)
    key, hmac_key, iv = _derive(password, salt)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plaintext.encode()) + padder.finalize()) + encryptor.finalize()
    mac = HMAC(hmac_key, hashes.SHA256())
    mac.update(ciphertext)
    body = hexlify(b"\n".join([hexlify(salt), hexlify(mac.finalize()), hexlify(ciphertext)])).decode()
    header = f"{HEADER};1.2;AES256;{vault_id}" if vault_id else f"{HEADER};1.1;AES256"
    lines = [body[i : i + LINE_WIDTH] for i in range(0, len(body), LINE_WIDTH)]
    return "\n".join([header, *lines]) + "\n"


def _parse(envelope: str, where: str) -> tuple[str, bytes, bytes, bytes]:
    lines = envelope.strip().splitlines()
    header = lines[0].strip().split(";") if lines else []
    if len(header) < 3 or header[0] != HEADER:
        raise InventoryError(f"{where}: not a vault value (it must start with {HEADER};1.1;AES256)")
    version, cipher = header[1].strip(), header[2].strip()
    if version not in ("1.1", "1.2") or cipher != "AES256":
        raise InventoryError(f"{where}: unsupported vault format {version}/{cipher} (berth reads 1.1 and 1.2 AES256)")
    vault_id = header[3].strip() if version == "1.2" and len(header) > 3 else DEFAULT_ID
    try:
        salt_hex, tag_hex, ciphertext_hex = unhexlify("".join(line.strip() for line in lines[1:])).split(b"\n", 2)
        return vault_id, unhexlify(salt_hex), unhexlify(tag_hex), unhexlify(ciphertext_hex)
    except (HexError, ValueError):
        raise InventoryError(f"{where}: damaged vault value (not the hex Ansible writes)") from None


@functools.lru_cache(maxsize=256)
def _derive(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    """PBKDF2 is slow on purpose; each (password, salt) is derived once per run."""
    material = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=2 * KEY_LENGTH + IV_LENGTH, salt=salt, iterations=ITERATIONS
    ).derive(password)
    return material[:KEY_LENGTH], material[KEY_LENGTH : 2 * KEY_LENGTH], material[2 * KEY_LENGTH :]
