"""Encryption with the standard ``age`` program, so a copy decrypts without velocity-pg.

Only public keys (recipients) are needed to encrypt; the identity (the secret
key) is needed only to read a copy back, and it travels as a file name
(``-i FILE``), never as an argument's contents. Data flows through pipes
(:class:`velocity_pg.store.pipe.Filter`): a dump is never loaded into memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from velocity_pg.errors import ConfigError
from velocity_pg.settings import OffSite, file_recipients
from velocity_pg.store import pipe

PROGRAM = "age"
#: Suffix of an encrypted copy's object: ``NAME.age``.
SUFFIX = ".age"


def find_age() -> str:
    """The age program, or a ConfigError that says how to install it."""
    found = shutil.which(PROGRAM)
    if found is None:
        raise ConfigError(
            "off-site copies are to be encrypted (BACKUP_AGE_RECIPIENTS/_FILE) but the age "
            "program is not installed; install it (Debian/Alpine package `age`); "
            "nothing was done"
        )
    return found


def encrypt_cmd(program: str, offsite: OffSite) -> list[str]:
    """``age --encrypt -r KEY... [-R FILE]``: stdin to stdout, binary output."""
    cmd = [program, "--encrypt"]
    for key in offsite.recipients:
        cmd += ["-r", key]
    if offsite.recipients_file is not None:
        cmd += ["-R", str(offsite.recipients_file)]
    return cmd


def decrypt_cmd(program: str, identity: Path) -> list[str]:
    """``age --decrypt -i FILE``: stdin to stdout."""
    return [program, "--decrypt", "-i", str(identity)]


def public_keys(offsite: OffSite) -> list[str]:
    """Every recipient, the file's lines included (comments and blanks skipped)."""
    keys = list(offsite.recipients)
    if offsite.recipients_file is not None:
        keys += file_recipients(offsite.recipients_file)
    return keys


def check_can_encrypt(offsite: OffSite) -> str:
    """Fail closed before anything runs: age is there and accepts these recipients.

    Encrypts a few bytes to nowhere with the configured recipients; returns the program.
    """
    program = find_age()
    status, stderr = pipe.run_quietly(encrypt_cmd(program, offsite), b"velocity-pg probe")
    if status != 0:
        reason = " ".join(stderr.split()) or f"exit status {status}"
        raise ConfigError(
            f"age cannot encrypt to the configured recipients ({reason}); fix "
            "BACKUP_AGE_RECIPIENTS / BACKUP_AGE_RECIPIENTS_FILE; nothing was done"
        )
    return program


def identity_for(offsite: OffSite | None, what: str) -> Path:
    """The identity file needed to decrypt ``what``, or a ConfigError saying what to set."""
    identity = None if offsite is None else offsite.identity_file
    if identity is None:
        raise ConfigError(
            f"{what} is encrypted with age: set BACKUP_AGE_IDENTITY_FILE to the identity "
            "(secret key) file to read it back"
        )
    if not identity.is_file():
        raise ConfigError(f"BACKUP_AGE_IDENTITY_FILE {identity} is not a readable file; fix it")
    return identity


def encrypting(source: pipe.Reader, offsite: OffSite, program: str) -> pipe.Filter:
    """A reader of ``source`` encrypted to the recipients."""
    return pipe.Filter(encrypt_cmd(program, offsite), source)


def decrypting(source: pipe.Reader, identity: Path) -> pipe.Filter:
    """A reader of ``source`` decrypted with the identity."""
    return pipe.Filter(decrypt_cmd(find_age(), identity), source)
